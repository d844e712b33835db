"""prefect.yaml registered on a real Prefect server and run by the environments' own workers
(``bascule worker``), cloning a team's repository: the
scheduled staging redeploy runs from its schedule, `bascule trigger` drives a deploy (and a
refused one reads as one line), and a deploy killed right after the switch is put right by
the recover automation alone."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import deploys, workers
from tests.support.cluster import Cluster, wait_for
from tests.support.verdicts import assert_one_line, run_logs
from tests.support.workers import SHARED_POOLS

# Their workers serve the session server's shared pools (bascule-staging, bascule-dev), as
# test_abort's does: one xdist worker runs them one after another (make test's --dist
# loadgroup), or one test's worker would take the other's runs.
pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.xdist_group(SHARED_POOLS)]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
UNSET = "BASCULE_TEST_NEVER_SET"  # dev's secret comes from it: its deploys are refused


@pytest.fixture
def worker(cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path) -> Iterator[str]:
    """The repository's deployments, a team's repository with a test configuration, and
    dev's and staging's workers; yields the repository's commit."""
    repo = workers.Repository.make(tmp_path)

    def dev_needs_a_secret(work: Path) -> None:
        with (work / "deployments" / "dev.yaml").open("a") as dev:
            dev.write(f"secrets:\n  API_TOKEN: {{env: {UNSET}}}\n")

    commit = repo.commit(
        namespace, "config", {"rollout": {"lock_timeout_seconds": 120}}, change=dev_needs_a_secret
    )
    repo.push()
    # The real cron, sped up for the test.
    workers.register(prefect_server, tmp_path / "prefect.yaml", [{"interval": 15}])
    # Before the worker starts: the scheduled redeploy needs a release to redeploy.
    seed(prefect_server, cluster, repo)
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    with (
        workers.bascule_worker(prefect_server, tmp_path / "dev.log", "dev", repo.bare, env=env),
        workers.bascule_worker(
            prefect_server, tmp_path / "staging.log", "staging", repo.bare, env=env
        ),
    ):
        yield commit


def seed(api: str, cluster: Cluster, repo: workers.Repository) -> None:
    """v1 serving staging, deployed here from the repository's configuration."""
    cfg = str(repo.work / "deployments")
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    seeded = deploys.run(api, "deploy", "--dir", cfg, "staging", "--image", V1, env=env)
    assert seeded.returncode == 0, seeded.stderr


def test_deployments_scheduled_redeploy_and_trigger(
    cluster: Cluster, namespace: str, prefect_server: str, worker: str, tmp_path: Path
) -> None:
    listed = workers.prefect(prefect_server, "deployment", "ls").stdout
    for name in (
        "deploy/dev",
        "deploy/staging",
        "deploy/production",
        "redeploy/staging",
        "rollback/production",
        "recover/staging",
    ):
        assert name in listed, listed

    def redeployed() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in deploys.history(cluster, namespace)
                if r["kind"] == "redeploy" and r["phase"] == "done"
            ),
            None,
        )

    record = wait_for(redeployed, 240, interval=2, what="a scheduled redeploy in the history")
    assert record["result"] == "succeeded", record
    drift = next(s for s in record["steps"] if s["name"] == "drift-check")
    assert drift["detail"].startswith("no drift from r"), drift
    assert record["image"] == V1

    # Stop the sped-up schedule (clearing it also drops its runs not yet started); a
    # redeploy already running is waited for through the lock timeout.
    cleared = workers.prefect(
        prefect_server, "deployment", "schedule", "clear", "redeploy/staging", "-y"
    )
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    # Meanwhile a deploy the flow refuses: in its flow-run process, the worker's.
    refused_log = tmp_path / "refused.log"
    refused = deploys.start(prefect_server, "trigger", "dev", "--image", V1, log=refused_log)
    summary = tmp_path / "summary.md"
    res = deploys.run(
        prefect_server,
        "trigger",
        "staging",
        "--image",
        V2,
        "--commit",
        worker,
        "--timeout",
        "300",
        "--summary",
        str(summary),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert deploys.history(cluster, namespace)[-1]["image"] == V2
    assert "Completed" in summary.read_text() or "completed" in summary.read_text()

    # Refused reads as one line in the trigger's output, the run's log streamed, and in the
    # run's log in the API as the UI shows it: the reason, no traceback.
    assert refused.wait(timeout=120) == 2, refused_log.read_text()[-3000:]
    output = refused_log.read_text()
    reason = f"environment variable {UNSET} is not set"
    assert reason in output
    assert_one_line(output, "bascule: flow run ended Refused")
    run_id = re.findall(r"/runs/flow-run/([0-9a-f-]{36})", output)[0]
    assert_one_line("\n".join(run_logs(prefect_server, run_id)), reason)


@pytest.fixture
def v1_with_worker(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """v1 serving staging, the deployments registered without schedules, and staging's
    worker. The verification window is long enough that the kill lands inside it."""
    repo = workers.Repository.make(tmp_path)
    repo.commit(
        namespace,
        "config",
        {
            "verification": {"window_seconds": 20, "interval_seconds": 1},
            "rollout": {"scale_down_delay_seconds": 20},
        },
    )
    repo.push()
    workers.register(prefect_server, tmp_path / "prefect.yaml")
    seed(prefect_server, cluster, repo)
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    log = tmp_path / "worker.log"
    with workers.bascule_worker(prefect_server, log, "staging", repo.bare, env=env) as proc:
        yield proc


def test_run_killed_after_switch_is_recovered_automatically(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    v1_with_worker: subprocess.Popen[bytes],
) -> None:
    got = workers.kill_after_switch(
        cluster, prefect_server, namespace, v1_with_worker, V2, old_version="v1"
    )
    print(f"crash_recovery_seconds={got.seconds:.1f}")
    after = [s for s in got.report.samples if s["t"] > got.killed_at]
    # The poller kept asking, and the killed run had left v2 serving.
    assert len(after) >= 3 * (after[-1]["t"] - got.killed_at), len(after)
    assert any(s["version"] == "v2" for s in after), after[:5]
    assert got.seconds <= 30
    assert got.killed["result"] == "interrupted", got.killed
    assert "traffic returned to blue" in got.killed["reason"], got.killed["reason"]
    assert deploys.active_color(cluster, namespace) == "blue"
    assert deploys.replicas(cluster, namespace, "green") == 0

    def recover_run() -> dict[str, Any] | None:
        runs = httpx.post(
            f"{prefect_server}/flow_runs/filter",
            json={"flows": {"name": {"any_": ["recover"]}}},
        ).json()
        return next(
            (r for r in runs if got.killed["flow_run_id"] in r["parameters"].get("cause", "")),
            None,
        )

    run = wait_for(recover_run, 30, what="the recover run")

    def ended() -> dict[str, Any] | None:
        state = httpx.get(f"{prefect_server}/flow_runs/{run['id']}").json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    final = wait_for(ended, 60, what="the recover run to end")
    assert final["type"] == "COMPLETED", final
    assert "crashed" in run["parameters"]["cause"], run["parameters"]
    killed_run = httpx.get(f"{prefect_server}/flow_runs/{got.killed['flow_run_id']}").json()
    assert killed_run["state"]["type"] == "CRASHED", killed_run["state"]
    # Where the time went, from the kill: Prefect's report, the recovery's process start.
    started = httpx.get(f"{prefect_server}/flow_runs/{run['id']}").json()["start_time"]
    print(
        f"crash_reported_after={at(killed_run['state']['timestamp']) - got.killed_at:.1f} "
        f"recover_started_after={at(started) - got.killed_at:.1f}"
    )


def at(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()
