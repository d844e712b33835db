"""prefect.yaml registered on a real Prefect server and run by a real process worker: the
scheduled staging redeploy runs from its schedule, and `bascule trigger` drives a deploy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import deploys
from tests.support.cluster import REPO, Cluster, wait_for
from tests.support.envs import write_envs

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"


def prefect(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env=deploys.cli_env(api),
        timeout=300,
    )


@pytest.fixture
def worker(cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path) -> Iterator[str]:
    """The repository's deployments, pointed at a test configuration, with a worker."""
    cfg = write_envs(
        tmp_path / "cfg", namespace, cluster.kubeconfig, {"rollout": {"lock_timeout_seconds": 120}}
    )
    spec: dict[str, Any] = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        dep["parameters"]["config_dir"] = str(cfg)
        if dep.get("schedules"):
            dep["schedules"] = [{"interval": 15}]  # the real cron, sped up for the test
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    made = prefect(prefect_server, "work-pool", "create", "bascule", "--type", "process")
    assert made.returncode == 0 or "already exists" in made.stdout + made.stderr, made.stderr
    res = prefect(
        prefect_server, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # Before the worker starts: the scheduled redeploy needs a release to redeploy.
    seeded = deploys.run(prefect_server, "deploy", "--dir", str(cfg), "staging", "--image", V1)
    assert seeded.returncode == 0, seeded.stderr
    env = {**deploys.cli_env(prefect_server), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "bascule"],
        cwd=REPO,
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield str(cfg)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_deployments_scheduled_redeploy_and_trigger(
    cluster: Cluster, namespace: str, prefect_server: str, worker: str, tmp_path: Path
) -> None:
    listed = prefect(prefect_server, "deployment", "ls").stdout
    for name in (
        "deploy/dev",
        "deploy/staging",
        "deploy/production",
        "redeploy/staging",
        "rollback/production",
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
    cleared = prefect(prefect_server, "deployment", "schedule", "clear", "redeploy/staging", "-y")
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    summary = tmp_path / "summary.md"
    res = deploys.run(
        prefect_server,
        "trigger",
        "staging",
        "--image",
        V2,
        "--commit",
        "0123456789abcdef",
        "--timeout",
        "300",
        "--summary",
        str(summary),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert deploys.history(cluster, namespace)[-1]["image"] == V2
    assert "Completed" in summary.read_text() or "completed" in summary.read_text()
