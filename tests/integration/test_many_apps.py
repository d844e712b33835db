"""Ten apps in one environment (one namespace), deployed at once by ten `bascule deploy`
processes as ten workers would, under load on every app's active Service: every deploy
succeeds, no request fails, each app's history holds its own releases only; and two deploys
of the same app and environment exclude each other; a run that dies is put right for its app."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import deploys
from tests.support.apps import app_names, start_deploys, wait_deploys, write_apps
from tests.support.cluster import Cluster, LoadDriver

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.alone]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
APPS = 10
RPS = 20  # per app, through its active Service
IDLE = {"blue": "green", "green": "blue"}


def test_ten_apps_deploy_at_once_under_load_and_one_app_still_excludes_itself(
    cluster: Cluster, namespace: str, tmp_path: Path, prefect_server: str
) -> None:
    cfg = write_apps(tmp_path / "cfg", namespace, cluster.kubeconfig, APPS)
    apps = app_names(APPS)
    status = deploys.run(prefect_server, "status", "--dir", str(cfg), "staging")
    assert status.returncode == 0, status.stderr
    assert [line.split(": ")[1] for line in status.stdout.splitlines()] == apps
    # Several apps: a command that acts on one must be told which.
    ambiguous = deploys.run(prefect_server, "deploy", "--dir", str(cfg), "staging")
    assert ambiguous.returncode == 2 and "--app" in ambiguous.stderr, ambiguous.stderr

    # From nothing: ten first deploys at once.
    first = wait_deploys(start_deploys(prefect_server, cfg, apps, V1, tmp_path / "v1"))
    for d in first:
        assert d.proc.returncode == 0, f"{d.app}:\n{d.output[-3000:]}"

    # Under load: ten deploys of v2 at once, and an eleventh of the first app beside its own.
    loads = {
        app: LoadDriver(cluster, deploys.service_url(cluster, namespace, app), ("v1", "v2"), RPS, 4)
        for app in apps
    }
    try:
        time.sleep(2)  # every driver sending before anything moves
        wall = time.monotonic()
        second = start_deploys(prefect_server, cfg, apps, V2, tmp_path / "v2")
        twin = start_deploys(prefect_server, cfg, apps[:1], V2, tmp_path / "twin")[0]
        wait_deploys([*second, twin])
        wall = time.monotonic() - wall
        time.sleep(1)
    finally:
        reports = {app: load.stop() for app, load in loads.items()}
    print(f"10 deploys under load: {wall:.1f} s")

    # Of the two deploys of the first app, started together, one went through and the other
    # was refused at once (rollout.lock_timeout_seconds: 0) naming the holder, exit 2.
    same_app = [second[0], twin]
    codes = sorted(d.proc.returncode for d in same_app)
    assert codes == [0, 2], [d.output[-2000:] for d in same_app]
    refused = next(d for d in same_app if d.proc.returncode == 2)
    assert "LockHeld" in refused.output and f"{apps[0]} in staging" in refused.output
    for d in second[1:]:
        assert d.proc.returncode == 0, f"{d.app}:\n{d.output[-3000:]}"

    ids: set[str] = set()
    for app in apps:
        report = reports[app]
        report.assert_sustained()
        assert report.failures == [], (app, report.failures[:5])
        assert set(report.versions(since=report.stopped - 1)) == {"v2"}, app
        releases = deploys.history(cluster, namespace, app)
        assert [(r["image"], r["result"]) for r in releases] == [
            (V1, "succeeded"),
            (V2, "succeeded"),
        ], (app, json.dumps(releases)[:2000])
        assert deploys.active_color(cluster, namespace, app) == releases[-1]["color"]
        mine = {r["id"] for r in releases}
        assert not mine & ids, f"{app} shares a release with another app"
        ids |= mine
    status = deploys.run(prefect_server, "status", "--dir", str(cfg), "staging")
    assert status.stdout.count("serving bascule.local/sample-app:v2") == APPS, status.stdout

    # One app's run dies right after its switch. The recover flow, started as prefect.yaml's
    # automations start it (for the environment: they do not know the app), finds that app's
    # release in flight and puts its traffic back; the other apps are left as they are.
    victim = apps[5]
    serving = str(deploys.active_color(cluster, namespace, victim))
    proc = start_deploys(prefect_server, cfg, [victim], V1, tmp_path / "killed")[0].proc
    deploys.kill_at_switch(cluster, namespace, proc, IDLE[serving], app=victim)
    recovered = recover(prefect_server, cfg)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"{victim}: " in recovered.stdout, recovered.stdout
    assert deploys.active_color(cluster, namespace, victim) == serving
    assert deploys.history(cluster, namespace, victim)[-1]["result"] == "interrupted"
    assert len(deploys.history(cluster, namespace, apps[0])) == 2


def recover(api: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    """The recover flow for staging with no app, in a process of its own as a worker runs it."""
    call = "bascule.flows.recover:recover('staging', {dir}, cause='test', return_state=True)"
    return deploys.run_flow(api, str(cfg), call, timeout=300)
