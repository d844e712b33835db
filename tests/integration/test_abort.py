"""Stopping a deploy on request, on the real cluster and a real Prefect server: `bascule
abort` of a run in a process of its own, waiting for approval (the idle color goes to zero,
traffic never moves) and in its verification window (traffic goes back), and Cancel through
Prefect's API of a run a worker executes, in its window: the worker kills it, and the
recovery it starts puts traffic back."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import deploys, workers
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
# Long enough that the request lands inside it.
WINDOW: dict[str, Any] = {
    "verification": {"window_seconds": 20, "interval_seconds": 1},
    "rollout": {"scale_down_delay_seconds": 20},
}


def config(tmp: Path, cluster: Cluster, ns: str, over: dict[str, Any] | None = None) -> str:
    path = tmp / f"cfg-{uuid.uuid4().hex[:6]}"
    return str(write_envs(path, ns, cluster.kubeconfig, over, environments=("staging",)))


def deploy_v1(api: str, cluster: Cluster, ns: str, tmp: Path) -> None:
    """v1 serving on blue."""
    res = deploys.run(api, "deploy", "--dir", config(tmp, cluster, ns), "staging", "--image", V1)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert deploys.active_color(cluster, ns) == "blue"


def active_service(cluster: Cluster, ns: str) -> dict[str, Any]:
    svc: dict[str, Any] = cluster.get_json("-n", ns, "service", "sample-app")
    return svc


def run_state(api: str, run_id: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
    return state


def serving(cluster: Cluster, ns: str) -> str | None:
    try:
        code, body = cluster.http_get(deploys.service_url(cluster, ns))
    except ConnectionError:
        return None
    return str(json.loads(body)["version"]) if code == 200 else None


def abort(api: str, run_id: str) -> Any:
    return deploys.run(api, "abort", run_id, "--as", "carol", "--reason", "wrong image")


def test_an_abort_while_waiting_for_approval_drops_the_idle_color_and_moves_no_traffic(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    deploy_v1(prefect_server, cluster, namespace, tmp_path)
    gated = {"approval": {"required": True, "timeout_seconds": 300}}
    cfg = config(tmp_path, cluster, namespace, gated)
    log = tmp_path / "deploy.log"
    proc = deploys.start(prefect_server, "deploy", "--dir", cfg, "staging", "--image", V2, log=log)
    run_id = deploys.paused_run(prefect_server, cluster, namespace, V2)
    assert deploys.replicas(cluster, namespace, "green") > 0
    before = active_service(cluster, namespace)

    res = abort(prefect_server, run_id)

    assert res.returncode == 0, res.stdout + res.stderr
    assert "Aborted: aborted by carol: wrong image" in res.stdout, res.stdout
    assert proc.wait(timeout=60) == 130, log.read_text()[-3000:]
    last = deploys.history(cluster, namespace)[-1]
    assert (last["image"], last["result"]) == (V2, "aborted"), last
    assert last["reason"] == "aborted by carol: wrong image", last
    assert deploys.replicas(cluster, namespace, "green") == 0
    after = active_service(cluster, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert deploys.active_color(cluster, namespace) == "blue"
    state = run_state(prefect_server, run_id)
    assert (state["type"], state["name"]) == ("CANCELLED", "Aborted"), state


def test_an_abort_in_the_verification_window_puts_traffic_back_on_the_old_color(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    deploy_v1(prefect_server, cluster, namespace, tmp_path)
    seen = {r["id"] for r in deploys.history(cluster, namespace)}
    cfg = config(tmp_path, cluster, namespace, WINDOW)
    log = tmp_path / "deploy.log"
    proc = deploys.start(prefect_server, "deploy", "--dir", cfg, "staging", "--image", V2, log=log)
    switched = deploys.wait_phase(cluster, namespace, V2, {"switched"}, ignore=seen)
    assert deploys.active_color(cluster, namespace) == "green"

    res = abort(prefect_server, str(switched["flow_run_id"]))

    assert res.returncode == 0, res.stdout + res.stderr
    assert proc.wait(timeout=60) == 130, log.read_text()[-3000:]
    last = deploys.history(cluster, namespace)[-1]
    assert (last["id"], last["result"]) == (switched["id"], "aborted"), last
    assert last["reason"] == "aborted by carol: wrong image", last
    assert [s["name"] for s in last["steps"]][-1] == "rollback-switch", last["steps"]
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0
    # kube-proxy follows the Service within its sync period.
    wait_for(lambda: serving(cluster, namespace) == "v1" or None, 10, what="v1 answering")


@pytest.mark.xdist_group(workers.SHARED_POOLS)  # their workers share pools: one at a time
def test_a_cancel_through_prefects_api_of_a_workers_run_in_its_window_puts_traffic_back(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    """As the UI's Cancel: the flow run set Cancelling. Its worker kills the process; the
    run ends Cancelled, which starts recover/staging, on that worker too."""
    repo = workers.Repository.make(tmp_path)
    repo.commit(namespace, "config", WINDOW)
    repo.push()
    workers.register(
        prefect_server, tmp_path / "prefect.yaml", only=("deploy/staging", "recover/staging")
    )
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    cfg = str(repo.work / "deployments")
    seeded = deploys.run(prefect_server, "deploy", "--dir", cfg, "staging", "--image", V1, env=env)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    seen = {r["id"] for r in deploys.history(cluster, namespace)}
    with workers.bascule_worker(
        prefect_server, tmp_path / "worker.log", "staging", repo.bare, env=env
    ):
        started = workers.prefect(
            prefect_server, "deployment", "run", "deploy/staging", "--param", f"image={V2}"
        )
        assert started.returncode == 0, started.stdout + started.stderr
        switched = deploys.wait_phase(cluster, namespace, V2, {"switched"}, ignore=seen)
        run_id = str(switched["flow_run_id"])
        # Forked from the worker's fork server, Prefect and Bascule imported already.
        assert workers.forked_by_fork_server(workers.infrastructure_pid(prefect_server, run_id))
        asked_at = time.monotonic()
        asked = httpx.post(
            f"{prefect_server}/flow_runs/{run_id}/set_state",
            json={"state": {"type": "CANCELLING", "name": "Cancelling"}},
            timeout=30,
        )
        assert asked.json()["status"] == "ACCEPT", asked.text

        def reconciled() -> dict[str, Any] | None:
            records = deploys.history(cluster, namespace)
            record = next(r for r in records if r["id"] == switched["id"])
            return record if record["phase"] == "done" else None

        record = wait_for(reconciled, 180, interval=0.5, what="the cancelled release put right")
        took = time.monotonic() - asked_at
        assert deploys.active_color(cluster, namespace) == "blue"
        wait_for(lambda: serving(cluster, namespace) == "v1" or None, 10, what="v1 answering")
        wait_for(
            lambda: run_state(prefect_server, run_id)["type"] == "CANCELLED" or None,
            60,
            what="the run to end Cancelled",
        )
        # Cancelled, it starts recover/staging as a crash does, whoever put it right.
        recovery = wait_for(lambda: recover_run(prefect_server, run_id), 60, what="recovery")
    assert "was cancelled" in recovery["parameters"]["cause"], recovery["parameters"]
    assert record["result"] == "aborted", record
    assert deploys.replicas(cluster, namespace, "green") == 0
    # Its worker kills it at once; the run may have seen the request first and begun to
    # put itself right (then its record ends with the switch back), converging either way.
    by = record["steps"][-1]["name"]
    assert by in ("reconciled", "rollback-switch"), record["steps"]
    print(f"put right by: {by}; cancel_recorded_seconds={took:.1f}")
    if by == "reconciled":
        assert record["reason"] == (
            "the run was stopped (cancelled in Prefect) after the switch to green, before "
            "verification finished; traffic returned to blue"
        ), record["reason"]
    else:
        assert record["reason"] == "cancelled in Prefect", record["reason"]


def recover_run(api: str, cancelled: str) -> dict[str, Any] | None:
    """The recover run a cancelled run started: its cause names it."""
    runs = httpx.post(
        f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["recover"]}}}, timeout=30
    ).json()
    return next((r for r in runs if cancelled in r["parameters"].get("cause", "")), None)
