"""The Prometheus analysis gate and the post-switch smoke tests, on the real cluster with a
real Prometheus (Debian's) scraping the app's pods every second, and a real Prefect server.

The tests share one namespace where a release is live (the module's fixture): each deploys a
new one and asserts what the gate made of it, starting from whatever serves then.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import deploys
from tests.support.cluster import Cluster, LoadDriver, wait_for
from tests.support.envs import REPO, write_envs
from tests.support.gate import (
    QUERIES,
    detection_seconds,
    detection_target,
    evidence_problems,
    expected,
    first_error_at,
    wait_for_traffic,
    write_gated,
)
from tests.support.prometheus import Prometheus, running_prometheus

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2, V3 = (f"bascule.local/sample-app:{v}" for v in ("v1", "v2", "v3"))
# Only /readyz in the window: ERROR_RATE spares it (and /healthz, /metrics) but not
# /version, which a probe every second would catch by chance; the metrics must catch it.
HEALTH = [{"name": "ready", "path": "/readyz", "successes": 1, "timeout_seconds": 30}]


def config(
    tmp: Path,
    cluster: Cluster,
    ns: str,
    prom: str | None,
    env: dict[str, str] | None = None,
    **over: Any,
) -> str:
    analysis: dict[str, Any] = {"queries": QUERIES, "interval_seconds": 1}
    if prom:
        analysis["prometheus"] = prom
    base: dict[str, Any] = {
        "env": {"DRAIN_SECONDS": "1", **(env or {})},
        "checks": {"health": HEALTH},
        "verification": {"window_seconds": 9, "interval_seconds": 1},
        "rollout": {"scale_down_delay_seconds": 9},
        "analysis": analysis,
    }
    merged = {**base, **over, "analysis": {**analysis, **over.get("analysis", {})}}
    path = tmp / f"cfg-{uuid.uuid4().hex[:6]}"
    return str(write_envs(path, ns, cluster.kubeconfig, merged, environments=("staging",)))


def deploy(api: str, cfg: str, image: str) -> Any:
    return deploys.run(api, "deploy", "--dir", cfg, "staging", "--image", image, "--redeploy")


def artifacts(api: str, run_id: str) -> tuple[str, list[dict[str, str]]]:
    """The run's markdown report and its analysis table."""
    arts = deploys.run_artifacts(api, run_id)
    markdown = next(a["data"] for a in arts if a["type"] == "markdown")
    tables = [json.loads(a["data"]) for a in arts if a["type"] == "table"]
    return markdown, tables[0] if tables else []


@pytest.fixture(scope="module")
def live(
    cluster: Cluster,
    prometheus: Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
    prefect_server: str,
) -> Iterator[str]:
    """A namespace with v1 live, deployed through the gate (nothing to compare with yet)."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(ns)
    cfg = config(
        tmp_path_factory.mktemp("live"),
        cluster,
        ns,
        prometheus.url,
        verification={"window_seconds": 2, "interval_seconds": 1},
    )
    res = deploy(prefect_server, cfg, V1)
    assert res.returncode == 0, res.stdout + res.stderr
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def answers(cluster: Cluster, url: str, status: int) -> bool:
    try:
        return cluster.http_get(url)[0] == status
    except ConnectionError:  # kube-proxy may not route a Service's new address yet (timed out)
        return False


def serving(cluster: Cluster, ns: str) -> str:
    code, body = cluster.http_get(deploys.service_url(cluster, ns))
    assert code == 200, body
    return str(json.loads(body)["version"])


@pytest.mark.alone
def test_a_healthy_version_passes_and_the_report_shows_each_evaluation(
    cluster: Cluster, prometheus: Prometheus, prefect_server: str, tmp_path: Path, live: str
) -> None:
    # Prometheus finds a new pod some seconds after it has an IP (its discovery manager
    # passes on changes every 5 s): until then the preview query has no data.
    slack = {"preview_evaluations": 7, "no_data": "inconclusive", "inconclusive_limit": 6}
    cfg = config(tmp_path, cluster, live, prometheus.url, analysis=slack)
    load = LoadDriver(cluster, deploys.service_url(cluster, live), rps=40, workers=8)
    time.sleep(2)  # the old version's baseline
    res = deploy(prefect_server, cfg, V2)
    report = load.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    report.assert_sustained()
    assert report.failures == [], report.failures[:5]
    last = deploys.history(cluster, live)[-1]
    assert (last["image"], last["result"]) == (V2, "succeeded")
    print("steps:", " ".join(f"{s['name']}={s['seconds']:.1f}" for s in last["steps"]))
    markdown, table = artifacts(prefect_server, last["flow_run_id"])
    names = {(r["phase"], r["name"]) for r in table}
    assert names == {
        ("preview", "all-scraped"),
        ("active", "error-ratio"),
        ("active", "latency-p95"),
        ("active", "latency-vs-baseline"),
    }, table
    preview = [r for r in table if r["phase"] == "preview"]
    assert (preview[-1]["value"], preview[-1]["verdict"]) == ("1", "successful"), preview
    brief = [(r["name"], r["value"], r["verdict"]) for r in table]
    # The first round after the switch may find no traffic yet in its 3 s (inconclusive).
    assert all(r["verdict"] != "failed" for r in table), brief
    # Evaluated on data, every second through the window, not passed for want of it.
    measured = [r for r in table if r["value"] != "-" and r["verdict"] == "successful"]
    assert len([r for r in measured if r["name"] == "error-ratio"]) >= 6, brief
    assert any(r["name"] == "latency-vs-baseline" for r in measured), brief
    assert "## Analysis" in markdown and markdown.count("| active | error-ratio:") >= 6, markdown
    assert "| smoke-http-active | ok |" in markdown, markdown


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# Errors and latency start this long after the new pods start: after the post-switch smoke
# tests, inside the window (the pipeline reaches the switch 3-5 s after the pods start).
BAD_AFTER = "9"
BAD_WINDOW = {"verification": {"window_seconds": 16, "interval_seconds": 1}}


def bad_release(
    cluster: Cluster, prom: Prometheus, api: str, tmp: Path, ns: str, env: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, str]], Any, str]:
    """Deploys a version that goes bad inside the window, under load; returns its release
    record, the analysis table, the load report and the version that served before."""
    before = serving(cluster, ns)
    cfg = config(
        tmp,
        cluster,
        ns,
        prom.url,
        env={**env, "ERROR_AFTER": BAD_AFTER},
        checks={"health": HEALTH, "smoke": {"after_switch": False}},
        rollout={"scale_down_delay_seconds": 16},
        **BAD_WINDOW,
    )
    load = LoadDriver(cluster, deploys.service_url(cluster, ns), rps=50, workers=16)
    res = deploy(api, cfg, V3 if before != "v3" else V2)
    time.sleep(2)  # who answers after the rollback
    report = load.stop()
    assert res.returncode == 3, res.stdout + res.stderr  # rolled back
    last = deploys.history(cluster, ns)[-1]
    print("steps:", " ".join(f"{s['name']}={s['seconds']:.1f}" for s in last["steps"]))
    _, table = artifacts(api, last["flow_run_id"])
    assert serving(cluster, ns) == before
    return last, table, report, before


@pytest.mark.alone
def test_an_error_ratio_rising_after_the_switch_is_rolled_back_by_the_gate(
    cluster: Cluster, prometheus: Prometheus, prefect_server: str, tmp_path: Path, live: str
) -> None:
    last, table, report, before = bad_release(
        cluster, prometheus, prefect_server, tmp_path, live, {"ERROR_RATE": "10"}
    )
    assert last["result"] == "rolled-back" and "'error-ratio'" in last["reason"], last
    back = next(s for s in last["steps"] if s["name"] == "rollback-switch")
    decided = back["at"] - back["seconds"]
    first_failed = min(epoch(r["time"]) for r in table if r["verdict"] == "failed")
    went_bad = first_error_at(report)
    detection = detection_seconds(last, report)
    bad = [s["t"] for s in report.samples if s["version"] != before or not s["ok"]]
    old_only = max(bad) - first_failed
    # After the first failure (a failure by its choice, which would bias a short span).
    between = [s for s in report.samples if went_bad < s["t"] < decided]
    answered = sum(s["ok"] for s in between) / len(between)
    print(
        f"gate_detection_seconds={detection:.3f} "
        f"first_failing_evaluation_to_old_only_seconds={old_only:.3f} "
        f"rollback_switch_seconds={back['seconds']:.3f} answered_while_bad={answered:.2f}"
    )
    report.assert_sustained()
    # Only the metrics could tell: /readyz passed every round, /version mostly answered
    # (10% of its answers fail: more than half answering holds however short the span).
    assert answered > 0.5, answered
    assert "ready" not in last["reason"]
    # The claimed target (tests/support/gate.py's detection_target).
    assert 0 < detection < detection_target(BAD_WINDOW["verification"]["interval_seconds"])
    # The README's claim for any rollback: only the old version answers within 1.5 s.
    assert old_only < 1.5
    assert deploys.replicas(cluster, live, last["color"]) == 0


def test_added_latency_is_rolled_back_by_the_latency_query(
    cluster: Cluster, prometheus: Prometheus, prefect_server: str, tmp_path: Path, live: str
) -> None:
    last, table, report, _ = bad_release(
        cluster, prometheus, prefect_server, tmp_path, live, {"LATENCY_MS": "300"}
    )
    assert last["result"] == "rolled-back" and "'latency" in last["reason"], last
    wrong = [f for f in report.failures if f["error"].startswith("HTTP")]
    assert wrong == [], wrong[:5]  # slow, never wrong
    failed = [r for r in table if r["verdict"] == "failed"]
    assert failed and all(r["name"].startswith("latency") for r in failed), table
    assert float(failed[0]["value"]) > 0.2


@pytest.mark.parametrize("policy", ["fail", "pass"])
def test_prometheus_stopped_in_the_window_follows_the_policy(
    policy: str, cluster: Cluster, prefect_server: str, tmp_path: Path, live: str
) -> None:
    with running_prometheus(cluster) as prom:  # a Prometheus of its own, to stop
        before = serving(cluster, live)
        cfg = config(
            tmp_path,
            cluster,
            live,
            prom.url,
            analysis={"unreachable": policy},
            verification={"window_seconds": 6, "interval_seconds": 1},
            rollout={"scale_down_delay_seconds": 6},
        )
        image = V3 if before != "v3" else V2
        proc = deploys.start(
            prefect_server,
            "deploy",
            "--dir",
            cfg,
            "staging",
            "--image",
            image,
            log=tmp_path / "deploy.log",
        )
        deploys.wait_phase(cluster, live, image, {"switched"})
        time.sleep(1.5)
    code = proc.wait(timeout=120)
    last = deploys.history(cluster, live)[-1]
    _, table = artifacts(prefect_server, last["flow_run_id"])
    unreachable = [r for r in table if "Prometheus unreachable" in r["detail"]]
    assert unreachable, table
    if policy == "fail":
        assert code == 3 and last["result"] == "rolled-back", last
        assert "unreachable" in last["reason"] and serving(cluster, live) == before
    else:
        assert code == 0 and last["result"] == "succeeded", last
        assert all(r["verdict"] == "successful" for r in unreachable)
        assert serving(cluster, live) != before


def test_a_failing_smoke_test_after_the_switch_rolls_back(
    cluster: Cluster, prefect_server: str, tmp_path: Path, live: str
) -> None:
    # Errors on every request after 8 s: the smoke tests pass on preview, the approval
    # holds the switch until the errors have started, then the ones on active fail.
    before = serving(cluster, live)
    image = V3 if before != "v3" else V2
    cfg = config(
        tmp_path,
        cluster,
        live,
        None,
        env={"ERROR_RATE": "100", "ERROR_AFTER": "8"},
        approval={"required": True, "timeout_seconds": 120},
    )
    proc = deploys.start(
        prefect_server,
        "deploy",
        "--dir",
        cfg,
        "staging",
        "--image",
        image,
        log=tmp_path / "deploy.log",
    )
    run_id = deploys.paused_run(prefect_server, cluster, live, image)
    preview = cluster.get_json("-n", live, "service", "sample-app-preview")["spec"]["clusterIP"]
    wait_for(lambda: answers(cluster, f"http://{preview}/version", 500), 30)
    assert deploys.run(prefect_server, "approve", run_id, "--as", "test").returncode == 0
    assert proc.wait(timeout=120) == 3, (tmp_path / "deploy.log").read_text()[-3000:]
    last = deploys.history(cluster, live)[-1]
    assert "post-switch smoke tests: version-matches: " in last["reason"], last
    assert [s["name"] for s in last["steps"]][-3:] == [
        "switch",
        "smoke-http-active",
        "rollback-switch",
    ]
    # The switch returns once the EndpointSlices name the old color; kube-proxy follows
    # within its sync period.
    url = deploys.service_url(cluster, live)
    wait_for(lambda: answers(cluster, url, 200) and serving(cluster, live) == before, 5)
    markdown, _ = artifacts(prefect_server, last["flow_run_id"])
    assert "Analysis: skipped: no Prometheus address" in markdown, markdown


@pytest.mark.alone
def test_the_demos_gate_passes_a_healthy_version_on_measured_values_only(
    cluster: Cluster, prometheus: Prometheus, prefect_server: str, tmp_path: Path, live: str
) -> None:
    """`make demo`'s gate (scripts/demo-gate.sh: its configuration, its load on the active
    and the preview Service) in this module's namespace: the release passes, and every
    evaluation of it measured a value, as the demo's own check requires."""
    before = serving(cluster, live)
    cfg = tmp_path / "demo"
    write_gated(REPO / "deployments", cfg, prometheus.url, {}, live, cluster.kubeconfig)
    preview = cluster.get_json("-n", live, "service", "sample-app-preview")["spec"]["clusterIP"]
    loads = [
        LoadDriver(cluster, deploys.service_url(cluster, live), rps=30, workers=8),
        LoadDriver(cluster, f"http://{preview}/version", rps=10, workers=4),
    ]
    try:
        assert wait_for_traffic(prometheus.url, live) == 0
        res = deploy(prefect_server, str(cfg), V3 if before != "v3" else V2)
    finally:
        active = loads[0].stop()
        loads[1].stop()  # fails while the preview has no pods: only the gate's data matter
    assert res.returncode == 0, res.stdout + res.stderr
    active.assert_sustained()
    assert active.failures == [], active.failures[:5]
    last = deploys.history(cluster, live)[-1]
    markdown, table = artifacts(prefect_server, last["flow_run_id"])
    print("steps:", " ".join(f"{s['name']}={s['seconds']:.1f}" for s in last["steps"]))
    staging = yaml.safe_load((cfg / "staging.yaml").read_text())
    assert evidence_problems(last, table, markdown, expected(staging["analysis"])) == [], table
    # Every pod of the release was scraped before the switch.
    scraped = {r["value"] for r in table if r["phase"] == "preview"}
    assert scraped == {str(staging["replicas"])}, table
