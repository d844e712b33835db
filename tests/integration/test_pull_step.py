"""prefect.yaml's pull step with a real Prefect server, a real process worker and a local bare
repository: a run for commit A runs A's flows and `deployments/` although the repository's
head and the worker's own checkout moved on to B; a run without a commit runs the head; a
production run of a commit that is not on the default branch stops before any flow code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import deploys, workers
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import REPO, write_envs

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1 = "bascule.local/sample-app:v1"
B_FLOWS = "commit B's flows ran"


def git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    return subprocess.run(
        ["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(
    work: Path, cluster: Cluster, namespace: str, marker: str, broken_flows: bool = False
) -> str:
    """This checkout's code and a dev configuration for ``namespace`` whose app gets
    MARKER=``marker``, committed in ``work``; returns the commit. ``broken_flows``: the deploy
    flow's module raises as it is imported."""
    for package in ("bascule", "flows", "tasks"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / package, work / package, ignore=ignore, dirs_exist_ok=True)
    if broken_flows:
        with (work / "flows" / "deploy.py").open("a") as f:
            f.write(f"\nraise RuntimeError({B_FLOWS!r})\n")
    write_envs(
        work / "deployments",
        namespace,
        cluster.kubeconfig,
        {"namespace": namespace, "env": {"MARKER": marker}},
        environments=("dev",),
    )
    # The Roles preflight checks against ship with the configuration.
    shutil.copytree(
        REPO / "deployments" / "rbac", work / "deployments" / "rbac", dirs_exist_ok=True
    )
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", marker)
    return git(work, "rev-parse", "HEAD")


def run_ended(api: str, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}").json()
    return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def test_a_run_for_commit_a_runs_as_code_and_configuration(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    bare, work = tmp_path / "bascule.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    a = commit(work, cluster, namespace, "commit-A")
    # B: other configuration, and flows that cannot run.
    b = commit(work, cluster, namespace, "commit-B", broken_flows=True)
    git(work, "push", "-q", str(bare), "main")
    # C: a branch not merged into main.
    git(work, "checkout", "-q", "-b", "unmerged", a)
    c = commit(work, cluster, namespace, "commit-C")
    git(work, "push", "-q", str(bare), "unmerged")
    # The worker's own checkout, and its import path, hold B.
    checkout = tmp_path / "worker-checkout"
    git(tmp_path, "clone", "-q", str(bare), str(checkout))
    assert git(checkout, "rev-parse", "HEAD") == b

    workers.register(
        prefect_server, None, tmp_path / "prefect.yaml", only=("deploy/dev", "deploy/production")
    )
    env = {"BASCULE_REPOSITORY": str(bare), "PYTHONPATH": str(checkout)}
    log = tmp_path / "worker.log"
    with workers.process_worker(prefect_server, log, cwd=checkout, env=env):
        res = deploys.run(
            prefect_server, "trigger", "dev", "--image", V1, "--commit", a, "--timeout", "240"
        )
        assert res.returncode == 0, res.stdout[-3000:] + log.read_text()[-3000:]
        (record,) = deploys.history(cluster, namespace)
        assert (record["commit"], record["result"]) == (a, "succeeded"), record
        color = deploys.active_color(cluster, namespace)
        pod_spec = cluster.get_json("-n", namespace, "deployment", f"sample-app-{color}")
        (container,) = pod_spec["spec"]["template"]["spec"]["containers"]
        assert {"name": "MARKER", "value": "commit-A"} in container["env"], container["env"]

        # No commit: the default branch's head, B, whose flows fail on import. In parallel,
        # production with C: only commits on the default branch. Its pull step fails before
        # any code of the commit runs; the reason is in the worker's log (a pull step has no
        # run logger), and the run ends Crashed.
        deployment = httpx.get(f"{prefect_server}/deployments/name/deploy/dev").json()
        started = httpx.post(
            f"{prefect_server}/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"environment": "dev", "image": V1}},
        )
        assert started.status_code == 201, started.text
        res = deploys.run(prefect_server, "trigger", "production", "--image", V1, "--commit", c)
        run = wait_for(
            lambda: run_ended(prefect_server, started.json()["id"]), 90, what="the head's run"
        )
    assert res.returncode == 1, res.stdout[-3000:]
    assert "Crashed" in res.stdout, res.stdout[-3000:]
    assert f"commit {c} is not on the default branch" in log.read_text()
    assert run["state"]["type"] in ("FAILED", "CRASHED"), run["state"]
    logs = httpx.post(
        f"{prefect_server}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}
    ).json()
    assert any(B_FLOWS in entry["message"] for entry in logs), logs
    assert len(deploys.history(cluster, namespace)) == 1
