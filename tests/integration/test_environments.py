"""Any environment names: a four-environment directory validates, deploys and is listed by
`bascule status`, on the real cluster and Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import deploys
from tests.support.cluster import Cluster
from tests.support.envs import approver_key, env_namespace, write_envs

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
# qa is no environment the repository ships: dev's file under its own name.
ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEPLOYED = {"qa": V1, "staging": V2, "production": V1}


def test_four_environments_validate_deploy_and_are_listed(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg = str(write_envs(tmp_path / "cfg", namespace, cluster.kubeconfig, None, ENVIRONMENTS))
    res = deploys.run(prefect_server, "validate", "--dir", cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    # Every environment of the directory, dev first and production last; then, in the same
    # order, what each one's runs manage.
    files = [line for line in res.stdout.splitlines() if line.endswith(": OK")]
    assert [Path(line.split(":")[0]).stem for line in files] == list(ENVIRONMENTS)
    managing = [line.split(" ")[0] for line in res.stdout.splitlines() if "manages:" in line]
    assert managing == list(ENVIRONMENTS)
    assert res.stdout.count(": OK\n") == len(ENVIRONMENTS)

    extra = [env_namespace(namespace, env) for env in DEPLOYED]
    extra.remove(namespace)  # staging's is the test's own
    for ns in extra:
        cluster.create_namespace(ns)
    try:
        # Both at once, each in its own process, as two environments' runs are.
        running = {
            env: deploys.start(
                prefect_server, "deploy", "--dir", cfg, env, "--image", image, log=tmp_path / env
            )
            for env, image in DEPLOYED.items()
        }
        # Production is protected whatever its neighbours are called: a signed approval.
        run_id = deploys.paused_run(
            prefect_server, cluster, env_namespace(namespace, "production"), DEPLOYED["production"]
        )
        key = str(approver_key(Path(cfg)))
        res = deploys.run(prefect_server, "approve", run_id, "--key", key)
        assert res.returncode == 0, res.stdout + res.stderr
        for env, proc in running.items():
            assert proc.wait(timeout=400) == 0, (tmp_path / env).read_text()[-3000:]

        res = deploys.run(prefect_server, "status", "--dir", cfg)
        assert res.returncode == 0, res.stdout + res.stderr
        listed = {
            line.split(" ")[0]: line for line in res.stdout.splitlines() if line[:1].isalpha()
        }
        assert list(listed) == list(ENVIRONMENTS), res.stdout
        for env in ENVIRONMENTS:
            line = listed[env]
            assert line.startswith(f"{env} ({env_namespace(namespace, env)}): "), line
            if env in DEPLOYED:
                assert f" serving {DEPLOYED[env]} " in line, line
            else:
                assert line.endswith(": nothing deployed yet"), line
    finally:
        for ns in extra:
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
