"""A new run of a Bascule worker's pool wakes the worker through Prefect's event stream: the
run is Pending within seconds, although the worker polls its pool only once a minute (issue
24: the real path, ``bascule trigger`` -> the Prefect server -> the environment's worker)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pytest

from bascule.outcome import StateName
from bascule.wake import LISTENING
from tests.support import deploys
from tests.support.cluster import wait_for
from tests.support.envs import write_envs
from tests.support.workers import bascule_worker

# It asserts a time: alone, not beside the suite on 2 busy cores.
pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.alone]
# The worker's poll: a run it found by polling would wait tens of seconds.
POLL_SECONDS = 60
# From the run's creation to its Pending state: an event, one query and the Pending proposal.
BOUND_SECONDS = 5.0
RUNS = 3


def pending_after_created(api: str, run_id: str) -> float:
    """Seconds from ``run_id``'s creation to its first Pending state, by the server's clock."""
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30)
    pending = min(_at(s["timestamp"]) for s in states.json() if s["type"] == "PENDING")
    return (pending - _at(run["created"])).total_seconds()


def _at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def test_a_new_run_wakes_its_worker_long_before_its_poll(
    prefect_server: str, namespace: str, tmp_path: Path
) -> None:
    # An environment, and so a pool and deployments, of this test's alone.
    environment = f"w{namespace.removeprefix('t-')}"
    cfg = write_envs(tmp_path / "cfg", namespace, None, None, (environment,))
    done = deploys.run(
        prefect_server, "register", "--dir", str(cfg), environment, "--like", "staging"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path / "worker.log"
    # Refused before anything is cloned (rule commit): the repository is never read.
    parameters = {"environment": environment, "image": "r.example/app:v1", "commit": "tip"}
    seconds = []
    with bascule_worker(
        prefect_server, log, environment, tmp_path / "unused.git", query_seconds=POLL_SECONDS
    ):
        wait_for(lambda: LISTENING in log.read_text(), 120, what="the worker to listen")
        for _ in range(RUNS):
            run_id = deploys.start_run(prefect_server, f"deploy/{environment}", parameters)
            state = deploys.run_ended(prefect_server, run_id, timeout=2 * POLL_SECONDS)
            assert (state["type"], state["name"]) == ("FAILED", StateName.REFUSED), state
            assert "rule commit" in state["message"], state
            seconds.append(pending_after_created(prefect_server, run_id))
    print(f"created -> Pending, polling every {POLL_SECONDS} s: {seconds}")
    assert max(seconds) <= BOUND_SECONDS, (seconds, log.read_text()[-3000:])
