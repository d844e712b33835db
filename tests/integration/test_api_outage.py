"""The Kubernetes API stops answering during a deploy, as it does in a control-plane upgrade
or a leader change: the local API server is frozen (SIGSTOP, then SIGCONT). A freeze shorter
than kube.outage_tolerance_seconds is waited out; a longer one fails the run naming it.

The freeze stops the whole cluster's API server: tests sharing that cluster at the same time
would see it too (CI runs them one at a time)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import deploys
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.alone]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
FREEZE = 20  # seconds: the outage the issue measured, under the default bound of 60 s


def apiserver_pid(cluster: Cluster) -> int:
    """The API server of the local cluster under test, whichever it is: the kubeconfig of a
    cluster from tests/cluster lives in its directory, beside the daemons' pid files."""
    pidfile = cluster.kubeconfig.parent / "pids" / "kube-apiserver"
    if not pidfile.exists():
        pytest.skip("freezing the API server needs a local cluster from tests/cluster")
    pid = int(pidfile.read_text())
    comm = Path(f"/proc/{pid}/comm")
    # Never signal whatever process reuses a stale pid.
    assert comm.exists() and comm.read_text().strip() == "kube-apiserver", pidfile
    return pid


def freeze(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    print(f"API server frozen at {time.time():.1f} for {seconds} s")
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def wait_task_running(prefect_api: str, release: dict[str, Any], task: str) -> None:
    """Until the run's task ``task`` is Running in Prefect (which a frozen Kubernetes API
    does not stop from answering): the freeze then surely falls inside that step."""
    query = {
        "task_runs": {
            "flow_run_id": {"any_": [release["flow_run_id"]]},
            "name": {"like_": task},
            "state": {"type": {"any_": ["RUNNING"]}},
        }
    }
    wait_for(
        lambda: httpx.post(f"{prefect_api}/task_runs/filter", json=query).json(),
        120,
        interval=0.2,
        what=f"{task} running",
    )


def config(tmp: Path, cluster: Cluster, ns: str, name: str, **over: Any) -> str:
    return str(write_envs(tmp / name, ns, cluster.kubeconfig, over))


def finish(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            deploys.kill(proc)
    return code, log.read_text()[-4000:]


def step(release: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(next(s for s in release["steps"] if s["name"] == name))


def test_api_outages_are_waited_out_then_named_past_the_bound(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    pid = apiserver_pid(cluster)

    # 1. Frozen during wait-ready (the new pods need 8 s to be Ready) and again during the
    # verification window: the deploy completes, the window observed for its whole length.
    slow = config(
        tmp_path,
        cluster,
        namespace,
        "slow",
        env={"START_DELAY": "8", "DRAIN_SECONDS": "1"},
        rollout={"readiness_failure_limit": 0, "scale_down_delay_seconds": 10},
        verification={"window_seconds": 10, "interval_seconds": 2},
    )
    log = tmp_path / "first.log"
    proc = deploys.start(prefect_server, "deploy", "--dir", slow, "staging", "--image", V1, log=log)
    try:
        release = deploys.wait_phase(cluster, namespace, V1, {"deploying"})
        wait_task_running(prefect_server, release, "wait-ready")
        freeze(pid, FREEZE)
        wait_task_running(prefect_server, release, "verify")
        freeze(pid, FREEZE)
    finally:
        code, out = finish(proc, log)
    assert code == 0, out
    done = deploys.history(cluster, namespace)[-1]
    assert done["result"] == "succeeded", done
    waited, verified = step(done, "wait-ready")["seconds"], step(done, "verify")["seconds"]
    print(f"outage_wait_ready_seconds={waited:.1f} outage_verify_seconds={verified:.1f}")
    print("steps:", [f"{s['name']}: {s['detail']}" for s in done["steps"]])
    assert waited >= FREEZE
    # The window (10 s, a round every 2 s) does not count the API's silence: its rounds are
    # all there, after the freeze.
    rounds = int(step(done, "verify")["detail"].split()[0])
    assert verified >= FREEZE and rounds >= 4, done["steps"]

    # 2. Frozen in the verification window for longer than the bound (8 s): the run rolls
    # back, naming the outage. The rollback has a bound of its own, and waits out the rest
    # of the freeze: the outage is found 9.5-11.5 s after the freeze began, and a rollback
    # started then waits until 17.5 s at least.
    short = config(
        tmp_path,
        cluster,
        namespace,
        "short",
        env={"DRAIN_SECONDS": "1"},
        kube={"outage_tolerance_seconds": 8},
        rollout={"scale_down_delay_seconds": 30},
        verification={"window_seconds": 30, "interval_seconds": 2},
    )
    log = tmp_path / "second.log"
    proc = deploys.start(
        prefect_server, "deploy", "--dir", short, "staging", "--image", V2, log=log
    )
    try:
        release = deploys.wait_phase(cluster, namespace, V2, {"switched"})
        wait_task_running(prefect_server, release, "verify")
        freeze(pid, 14)
    finally:
        code, out = finish(proc, log)
    assert code == 3, out  # rolled back
    last = deploys.history(cluster, namespace)[-1]
    print(f"outage_past_bound_reason={last['reason']!r}")
    assert last["result"] == "rolled-back", last
    assert "the Kubernetes API did not answer for" in last["reason"], last["reason"]
    assert "kube.outage_tolerance_seconds" in last["reason"]
    assert deploys.active_color(cluster, namespace) == done["color"]
    version = f"/api/v1/namespaces/{namespace}/services/sample-app:http/proxy/version"
    assert '"v1"' in cluster.kubectl("get", "--raw", version)
