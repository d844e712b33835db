"""The deploy and rollback flows as Kubernetes Jobs: prefect.yaml's `*-kubernetes` deployments
on the Kubernetes work pool (bascule/workpool.py), run by a real `prefect worker --type
kubernetes` from the flow image (tests/cluster/flow-image.sh) under the least-privilege
`bascule` ServiceAccount, with in-cluster configuration and the session's Prefect server as
pods reach it; a failed deploy's Job exits as `bascule deploy` does."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bascule import workpool
from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import Exit, StateName, exit_code
from bascule.runpolicy import ENTRYPOINTS, kubernetes_pool_name
from tests.support import deploys, jobs, workers
from tests.support.access import apply_rbac
from tests.support.cluster import Cluster
from tests.support.envs import write_envs
from tests.support.jobs import PodReachable, reachable_from_pods
from tests.support.prefect_server import server_on_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
# Not on the node, and never pulled: its pods stop at ErrImageNeverPull.
MISSING = "bascule.local/sample-app:missing"
# A required secret whose source is not set: the deploy is refused before it does anything.
REFUSED = {"secrets": {"API_TOKEN": {"env": "BASCULE_TEST_NEVER_SET"}}}
DEPLOYMENTS = (
    "deploy/staging-kubernetes",
    "rollback/staging-kubernetes",
    "deploy/dev-kubernetes",
)


@pytest.fixture(scope="module")
def pod_prefect(cluster: Cluster) -> Iterator[PodReachable]:
    """A Prefect server of this module's own, reachable from the host and from pods: the
    module registers every deploy/<env> of prefect.yaml, which other modules' workers serve
    on the session's server at the same time (tests/support/shared.py)."""
    with (
        server_on_cluster(cluster) as server,
        reachable_from_pods(cluster, server.api_url) as reachable,
    ):
        yield reachable


def job_config(cluster: Cluster, namespace: str, tmp: Path) -> dict[str, str]:
    """The environments' files for the flows in the pods: no kubeconfig (in-cluster
    configuration), the image's manifests; as the ConfigMap the pool's template mounts
    (CONFIG_MOUNT). Staging as the tests have it; dev, in the same namespace, REFUSED."""
    cfg = write_envs(tmp / "cfg", namespace, cluster.kubeconfig, environments=("staging", "dev"))
    files = {}
    for env, over in (("staging", {}), ("dev", {"namespace": namespace, **REFUSED})):
        data = yaml.safe_load((cfg / f"{env}.yaml").read_text()) | over
        del data["kube"]
        data["manifests"] = f"{workpool.WORKDIR}/deployments/manifests"
        files[f"{env}.yaml"] = yaml.safe_dump(data, sort_keys=False)
    return files


def run_deployment(
    api: str,
    name: str,
    namespace: str,
    job_variables: dict[str, Any] | None = None,
    **parameters: Any,
) -> str:
    """A run of deployment ``name`` through the API, as any API credential can start one,
    with ``job_variables`` besides the namespace."""
    flow, deployment = name.split("/")
    found = httpx.get(f"{api}/deployments/name/{flow}/{deployment}", timeout=30)
    found.raise_for_status()
    run = httpx.post(
        f"{api}/deployments/{found.json()['id']}/create_flow_run",
        json={
            "parameters": {"config_dir": workpool.CONFIG_MOUNT, **parameters},
            "job_variables": {"namespace": namespace, **(job_variables or {})},
        },
        timeout=30,
    )
    run.raise_for_status()
    return str(run.json()["id"])


def wait_run(api: str, run_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
        if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return dict(state)
        time.sleep(1)
    raise TimeoutError(f"flow run {run_id} did not end in {timeout} s")


def run_pod(cluster: Cluster, namespace: str, run_id: str) -> dict[str, Any]:
    """The pod of the run's Job (the worker labels both with the flow run's id)."""
    pods = cluster.get_json("-n", namespace, "pods", "-l", f"prefect.io/flow-run-id={run_id}")
    (pod,) = pods["items"]
    return dict(pod)


def container_exit(cluster: Cluster, namespace: str, run_id: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        status = run_pod(cluster, namespace, run_id)["status"].get("containerStatuses") or []
        terminated = status[0]["state"].get("terminated") if status else None
        if terminated:
            return int(terminated["exitCode"])
        assert time.monotonic() < deadline, f"the pod of {run_id} never terminated"
        time.sleep(0.5)


def released(cluster: Cluster, namespace: str, run_id: str) -> dict[str, Any]:
    """The history's record of the release the run made."""
    return next(r for r in deploys.history(cluster, namespace) if r["flow_run_id"] == run_id)


def run_logs(api: str, run_id: str) -> list[str]:
    found = httpx.post(
        f"{api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200},
        timeout=30,
    )
    found.raise_for_status()
    return [str(entry["message"]) for entry in found.json()]


def test_deploy_and_rollback_run_as_kubernetes_jobs(
    cluster: Cluster,
    namespace: str,
    pod_prefect: PodReachable,
    tmp_path: Path,
) -> None:
    api = pod_prefect.host_url
    started = time.monotonic()
    image = jobs.flow_image(cluster)
    print(f"flow image {image}: {time.monotonic() - started:.1f} s")
    cluster.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": workpool.CONFIG_MAP},
            "data": job_config(cluster, namespace, tmp_path),
        },
    )
    # The account of the Jobs: staging's, as `bascule rbac staging` makes it.
    apply_rbac(cluster, tmp_path / "cfg", "staging")
    cluster.create_namespace(f"{namespace}-dev")  # the local failing deploy's, below
    # The release a rollback goes back to, deployed here as a laptop does, meanwhile.
    local_cfg = write_envs(tmp_path / "local", namespace, cluster.kubeconfig)
    seed_log = tmp_path / "seed.log"
    seed = deploys.start(
        api, "deploy", "--dir", str(local_cfg), "staging", "--image", V1, log=seed_log
    )
    for environment in ("staging", "dev"):
        jobs.create_pool(pod_prefect, image, namespace, environment)
    workers.register(api, tmp_path / "prefect.yaml", only=DEPLOYMENTS)
    assert seed.wait(timeout=300) == 0, seed_log.read_text()[-3000:]

    print(f"set up: {time.monotonic() - started:.1f} s")
    # One worker per environment, on its own pool (here both Jobs' namespace is the same).
    with (
        jobs.kubernetes_worker(
            cluster, pod_prefect, tmp_path / "worker.log", "staging", image, (namespace,)
        ),
        jobs.kubernetes_worker(
            cluster, pod_prefect, tmp_path / "dev-worker.log", "dev", image, (namespace,)
        ),
    ):
        deployed = run_deployment(api, "deploy/staging-kubernetes", namespace, image=V2)
        state = wait_run(api, deployed)
        worker_log = (tmp_path / "worker.log").read_text()
        assert state["type"] == "COMPLETED", f"{state}\n{worker_log[-3000:]}"
        pod = run_pod(cluster, namespace, deployed)
        assert pod["spec"]["serviceAccountName"] == workpool.SERVICE_ACCOUNT
        # The worker fixed the flow's entrypoint; the pod ran no pull step of the deployment.
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[ENTRYPOINT_ENV] == ENTRYPOINTS["deploy"], env
        assert not any("pull step" in line for line in run_logs(api, deployed))
        assert container_exit(cluster, namespace, deployed) == Exit.COMPLETED
        record = released(cluster, namespace, deployed)
        assert (record["kind"], record["image"], record["phase"]) == ("deploy", V2, "done")
        assert cluster.http_get(deploys.service_url(cluster, namespace))[1].find('"v2"') >= 0
        # The flow's own log lines, from inside the pod, in the run's logs.
        assert any(line == "switch ..." for line in run_logs(api, deployed)), run_logs(
            api, deployed
        )

        print(f"deploy in a Job: {time.monotonic() - started:.1f} s")
        rolled = run_deployment(api, "rollback/staging-kubernetes", namespace)
        state = wait_run(api, rolled)
        assert state["type"] == "COMPLETED", state
        assert run_pod(cluster, namespace, rolled)["spec"]["serviceAccountName"] == "bascule"
        assert '"v1"' in cluster.http_get(deploys.service_url(cluster, namespace))[1]
        assert released(cluster, namespace, rolled)["kind"] == "rollback"

        print(f"rollback in a Job: {time.monotonic() - started:.1f} s")
        # The same failures in Jobs and here, at once: a deploy whose pods never start
        # (here in dev: the two would otherwise wait for each other's lock), and a deploy
        # refused for a missing secret (before the lock).
        failed = run_deployment(api, "deploy/staging-kubernetes", namespace, image=MISSING)
        refused = run_deployment(api, "deploy/dev-kubernetes", namespace, image=V2)
        refused_cfg = write_envs(
            tmp_path / "refused", namespace, cluster.kubeconfig, REFUSED, ("staging",)
        )
        local_runs = {
            "failed": (str(local_cfg), "dev", MISSING),
            "refused": (str(refused_cfg), "staging", V2),
        }
        local = {
            what: deploys.start(
                api, "deploy", "--dir", cfg, env, "--image", image, log=tmp_path / f"{what}.log"
            )
            for what, (cfg, env, image) in local_runs.items()
        }
        in_job = {}
        for what, run_id in (("failed", failed), ("refused", refused)):
            state = wait_run(api, run_id)
            exited = container_exit(cluster, namespace, run_id)
            in_job[what] = (state["type"], state["name"], exited)
        local_exit = {what: proc.wait(timeout=300) for what, proc in local.items()}

    # The state `bascule deploy` ends in, and its exit code, in the Job's container as here.
    # (Prefect's engine alone exits 1 for both.)
    expected = {
        "failed": ("FAILED", StateName.FAILED, Exit.FAILED),
        "refused": ("FAILED", StateName.REFUSED, Exit.USAGE),
    }
    assert in_job == expected, in_job
    for what, (kind, name, code) in expected.items():
        assert exit_code(kind, name) == code == local_exit[what], (
            what,
            (tmp_path / f"{what}.log").read_text()[-2000:],
        )
    assert '"v1"' in cluster.http_get(deploys.service_url(cluster, namespace))[1]
    print(f"jobs test: {time.monotonic() - started:.1f} s")
    cluster.kubectl("delete", "namespace", f"{namespace}-dev", "--wait=false", check=False)


# An API credential's attempts on staging's Kubernetes pool, and the rule that refuses each:
# the run's job variables, then the pool's base job template.
EVIL_IMAGE = "bascule.local/attacker-flows:evil"
READ_TOKEN = "sh -c 'cat /var/run/secrets/kubernetes.io/serviceaccount/token'"


def test_an_api_credential_cannot_change_what_a_kubernetes_job_runs(
    cluster: Cluster,
    namespace: str,
    pod_prefect: PodReachable,
    tmp_path: Path,
) -> None:
    """Whoever holds a Prefect API credential starts runs of deploy/staging-kubernetes with
    job variables, and edits the pool's base job template, to run another image or command,
    in another environment's namespace or as another account: staging's worker refuses each,
    Failed/Refused naming the rule, and creates no Job."""
    api = pod_prefect.host_url
    started = time.monotonic()
    image = jobs.flow_image(cluster)
    jobs.create_pool(pod_prefect, image, namespace, "staging")
    workers.register(api, tmp_path / "prefect.yaml", only=("deploy/staging-kubernetes",))
    pool = f"{api}/work_pools/{kubernetes_pool_name('staging')}"
    template = httpx.get(pool, timeout=30).json()["base_job_template"]
    production = f"{namespace}-production"  # another environment's namespace
    attempts = {
        "image": {"image": EVIL_IMAGE},
        "namespace": {"namespace": production},
        "service-account": {"service_account_name": "default"},
        "command": {"command": READ_TOKEN},
        "env": {"env": {"PREFECT_API_URL": "http://attacker.example/api"}},
    }
    with jobs.kubernetes_worker(
        cluster, pod_prefect, tmp_path / "worker.log", "staging", image, (namespace,)
    ):
        runs = {
            rule: run_deployment(
                api, "deploy/staging-kubernetes", namespace, job_variables, image=V2
            )
            for rule, job_variables in attempts.items()
        }
        runs["environment"] = run_deployment(
            api, "deploy/staging-kubernetes", namespace, environment="production", image=V2
        )
        ended = {rule: wait_run(api, run_id, timeout=60) for rule, run_id in runs.items()}
        # The pool's template, edited through the API: its command, then its image.
        for rule, variable, value in (
            ("command", "command", READ_TOKEN),
            ("image", "image", EVIL_IMAGE),
        ):
            edited = copy.deepcopy(template)
            edited["variables"]["properties"][variable]["default"] = value
            httpx.patch(pool, json={"base_job_template": edited}, timeout=30).raise_for_status()
            workers.pool_reread(api, kubernetes_pool_name("staging"))
            key = f"template {rule}"
            runs[key] = run_deployment(api, "deploy/staging-kubernetes", namespace, image=V2)
            ended[key] = wait_run(api, runs[key], timeout=60)
        httpx.patch(pool, json={"base_job_template": template}, timeout=30).raise_for_status()
    worker_log = (tmp_path / "worker.log").read_text()
    for key, state in ended.items():
        rule = key.removeprefix("template ")
        assert (state["type"], state["name"]) == ("FAILED", StateName.REFUSED), (
            key,
            state,
            worker_log[-3000:],
        )
        assert f"refused by the staging worker, rule {rule}: " in state["message"], (key, state)
    for run_id in runs.values():
        found = cluster.get_json("jobs", "-A", "-l", f"prefect.io/flow-run-id={run_id}")
        assert found["items"] == [], run_id
    print(f"{len(runs)} attempts refused: {time.monotonic() - started:.1f} s")
