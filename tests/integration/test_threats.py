"""Issue 21's attacks, played as an attacker holding each credential would, through the real
Prefect API, the environments' own workers (``bascule worker``, one per environment, each
with its own pool) and the real cluster; and the legitimate paths beside them.

Numbered as the issue's findings. Each refused attack asserts that the run ends Failed,
named Refused (not Crashed: that would start a recovery), with the rule in its message; that
production did not change; and that nothing secret was printed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import deploys, workers
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import env_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1 = "bascule.local/sample-app:v1"
ENVIRONMENTS = ("dev", "staging", "production")
DEPLOYMENTS = (
    "deploy/dev",
    "deploy/staging",
    "deploy/production",
    "rollback/production",
)


@dataclass
class Estate:
    """A team's setup: its repository, the three environments' namespaces and workers."""

    api: str
    cluster: Cluster
    repo: workers.Repository
    base: str  # the namespace names derive from it (tests.support.envs.env_namespace)
    logs: dict[str, Path]
    main: str  # the commit of main's head

    def ns(self, environment: str) -> str:
        return env_namespace(self.base, environment)

    def worker_log(self, environment: str) -> str:
        return self.logs[environment].read_text()


@pytest.fixture(scope="module")
def estate(
    cluster: Cluster, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Estate]:
    tmp = tmp_path_factory.mktemp("threats")
    base = f"t-{uuid.uuid4().hex[:10]}"
    for environment in ENVIRONMENTS:
        cluster.create_namespace(env_namespace(base, environment))
    repo = workers.Repository.make(tmp)
    main = repo.commit(base, "release 1")
    repo.push()
    workers.register(prefect_server, tmp / "prefect.yaml", only=DEPLOYMENTS)
    logs = {environment: tmp / f"{environment}-worker.log" for environment in ENVIRONMENTS}
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    with (
        workers.bascule_worker(
            prefect_server, logs["dev"], "dev", repo.bare, (env_namespace(base, "dev"),), env
        ),
        workers.bascule_worker(
            prefect_server, logs["staging"], "staging", repo.bare, (base,), env
        ),
        workers.bascule_worker(
            prefect_server,
            logs["production"],
            "production",
            repo.bare,
            (env_namespace(base, "production"),),
            env,
        ),
    ):
        yield Estate(prefect_server, cluster, repo, base, logs, main)
    for environment in ENVIRONMENTS:
        cluster.kubectl(
            "delete", "namespace", env_namespace(base, environment), "--wait=false", check=False
        )


def start(
    api: str,
    deployment: str,
    parameters: dict[str, Any],
    job_variables: dict[str, Any] | None = None,
) -> str:
    """A flow run of ``deployment`` through the API, as any API credential can start one."""
    found = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30)
    found.raise_for_status()
    made = httpx.post(
        f"{api}/deployments/{found.json()['id']}/create_flow_run",
        json={"parameters": parameters, "job_variables": job_variables or {}},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    run_id: str = made.json()["id"]
    return run_id


def ended(api: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        state: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(final, timeout, what=f"flow run {run_id} to end")


def assert_refused(estate: Estate, run_id: str, rule: str) -> str:
    """The run ended Failed/Refused by its worker, naming ``rule``; production unchanged."""
    state = ended(estate.api, run_id)
    assert (state["type"], state["name"]) == ("FAILED", "Refused"), state
    message: str = state["message"]
    assert f"rule {rule}:" in message, message
    assert not deploys.history(estate.cluster, estate.ns("production"))
    return message


def test_a_dev_deploy_runs_through_its_own_worker(estate: Estate) -> None:
    res = deploys.run(
        estate.api, "trigger", "dev", "--image", V1, "--commit", estate.main, "--timeout", "240"
    )
    assert res.returncode == 0, res.stdout[-3000:] + estate.worker_log("dev")[-3000:]
    (record,) = deploys.history(estate.cluster, estate.ns("dev"))
    assert (record["commit"], record["result"]) == (estate.main, "succeeded"), record


def test_1_a_pushed_branch_cannot_point_dev_at_production(estate: Estate) -> None:
    """Credential: push rights on a branch, no review. The branch's dev.yaml names
    production's namespace."""
    repo = estate.repo
    workers.git(repo.work, "checkout", "-q", "-b", "evil", estate.main)
    try:
        evil = repo.commit(
            estate.base,
            "dev, to production's namespace",
            {"namespace": estate.ns("production")},
            environments=("dev",),
        )
        repo.push("evil")
    finally:
        workers.git(repo.work, "checkout", "-q", "main")
    run = start(estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": evil})
    message = assert_refused(estate, run, "namespace")
    assert estate.ns("production") in message


def test_1_dev_deployment_cannot_run_production(estate: Estate) -> None:
    """Credential: a Prefect API key (dev's GitHub environment holds one). deploy/dev asked
    for environment=production lands on dev's worker, which runs only dev."""
    run = start(estate.api, "deploy/dev", {"environment": "production", "image": V1})
    assert_refused(estate, run, "environment")


@pytest.mark.parametrize(
    ("job_variables", "rule"),
    [
        ({"env": {"BASCULE_REPOSITORY": "https://attacker.invalid/bascule.git"}}, "env"),
        ({"command": "sh -c 'cat $KUBECONFIG'"}, "command"),
    ],
    ids=["repository", "command"],
)
def test_2_job_variables_cannot_change_what_runs(
    estate: Estate, job_variables: dict[str, Any], rule: str
) -> None:
    """Credential: a Prefect API key. Job variables on a production run."""
    parameters = {"environment": "production", "image": V1}
    run = start(estate.api, "deploy/production", parameters, job_variables)
    assert_refused(estate, run, rule)


@pytest.mark.parametrize(
    ("parameters", "rule"),
    [
        ({"environment": "../../x/production"}, "environment"),
        ({"environment": "production", "config_dir": "/tmp/attacker"}, "config-dir"),
    ],
    ids=["environment-path", "config-dir"],
)
def test_4_the_config_cannot_be_redirected(
    estate: Estate, parameters: dict[str, Any], rule: str
) -> None:
    """Credential: a Prefect API key. Parameters that would load another configuration."""
    run = start(estate.api, "deploy/production", {**parameters, "image": V1})
    assert_refused(estate, run, rule)
