"""Deployment metrics, alerts and DORA figures after real deploys and a real rollback on the
local cluster: read back from a real Pushgateway and Alertmanager, a real Prometheus fires a
shipped rule, and ``bascule stats`` agrees with the history. Endpoints that are down or hang
cost a deploy nothing but a log line."""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule.history import Release
from bascule.tasks import monitoring
from bascule.tasks.context import Env
from tests.support import deploys
from tests.support.alerting import group, running
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs
from tests.support.prefect_server import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
RULES = Path(__file__).resolve().parents[2] / "deployments" / "monitoring" / "rules.yaml"
GROUP = {"job": "bascule", "app": "sample-app", "environment": "staging"}


def values(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{labels other than the group's: value} of one family."""
    return {
        tuple(sorted((k, v) for k, v in m["labels"].items() if k not in {*GROUP, "instance"})): (
            float(m["value"])
        )
        for m in families.get(name, {}).get("metrics", [])
    }


def step(release: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in release["steps"] if s["name"] == name)


def epoch(iso: str) -> float:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


@contextlib.contextmanager
def hung_endpoint() -> Iterator[str]:
    """A TCP port that takes connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_metrics_alerts_and_stats_after_deploys_and_a_rollback(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    pushgateway: str,
    alertmanager: str,
    tmp_path: Path,
) -> None:
    live = {"monitoring": {"pushgateway": pushgateway, "alertmanager": alertmanager}}
    cfg = str(write_envs(tmp_path / "live", namespace, cluster.kubeconfig, live))
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dead = {"monitoring": {"pushgateway": down, "alertmanager": down, "timeout_seconds": 2}}
    cfg_down = str(write_envs(tmp_path / "down", namespace, cluster.kubeconfig, dead))

    # v1 with the endpoints down: the deploy completes, the log says why nothing went out.
    res = deploys.run(prefect_server, "deploy", "--dir", cfg_down, "staging", "--image", V1)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert f"metrics: not delivered to {down} — URLError" in out and "refused" in out, out
    assert "alerts: none raised" in out
    assert group(pushgateway, **GROUP) == {}

    # v2, with its commit's time: every stage's duration and the lead time reach the gateway.
    committed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    res = deploys.run(
        prefect_server,
        "deploy",
        "--dir",
        cfg,
        "staging",
        "--image",
        V2,
        "--commit",
        "abc1234",
        "--commit-time",
        committed,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"series pushed to {pushgateway}" in res.stdout + res.stderr
    v2 = deploys.history(cluster, namespace)[-1]
    families = group(pushgateway, **GROUP)
    stages = {
        dict(k)["stage"]: v
        for k, v in values(families, "bascule_deployment_stage_duration_seconds").items()
    }
    assert stages == pytest.approx({s["name"]: s["seconds"] for s in v2["steps"]})
    assert {"wait-ready", "switch", "verify"} <= stages.keys()
    [(info, _)] = values(families, "bascule_deployment_info").items()
    assert dict(info) == {
        "release": v2["id"],
        "kind": "deploy",
        "result": "succeeded",
        "image": V2,
        "color": "green",
    }
    lead = values(families, "bascule_lead_time_seconds")
    lead_time = step(v2, "switch")["at"] - epoch(committed)
    assert lead == {(("release", v2["id"]),): pytest.approx(lead_time, abs=1e-3)}
    done = values(families, "bascule_deployment_last_timestamp_seconds")
    assert done[(("kind", "deploy"), ("result", "succeeded"))] == epoch(v2["finished"])

    # Taken back by hand: the rollback's series, and its alert in Alertmanager.
    res = deploys.run(prefect_server, "rollback", "--dir", cfg, "staging")
    assert res.returncode == 0, res.stdout + res.stderr
    history = deploys.history(cluster, namespace)
    back = history[-1]
    assert back["kind"] == "rollback" and back["result"] == "succeeded"
    families = group(pushgateway, **GROUP)
    key = (("release", v2["id"]), ("trigger", "manual"))
    assert values(families, "bascule_rollback_last_timestamp_seconds") == {
        key: pytest.approx(step(back, "switch")["at"], abs=1e-3)
    }
    assert values(families, "bascule_rollback_switch_seconds") == {
        key: pytest.approx(step(back, "switch")["seconds"])
    }
    assert values(families, "bascule_rollback_restore_seconds") == {
        key: pytest.approx(step(back, "switch")["at"] - step(v2, "switch")["at"], abs=1e-3)
    }
    counts = values(families, "bascule_history_releases")
    assert counts == {
        (("kind", "deploy"), ("result", "succeeded")): 2,
        (("kind", "rollback"), ("result", "succeeded")): 1,
    }
    received = httpx.get(
        f"{alertmanager}/api/v2/alerts", params={"filter": 'alertname="BasculeRollback"'}
    ).json()
    [alert] = [a for a in received if a["labels"]["release"] == back["id"]]
    assert alert["labels"] == {
        "alertname": "BasculeRollback",
        "app": "sample-app",
        "environment": "staging",
        "release": back["id"],
        "severity": "warning",
    }
    run_url = alert["annotations"]["run_url"]
    assert run_url.endswith(f"/runs/flow-run/{back['flow_run_id']}"), run_url
    assert alert["status"]["state"] == "active"
    # The run's report says where its metrics and alert went.
    artifacts = httpx.post(
        f"{prefect_server}/artifacts/filter",
        json={
            "artifacts": {
                "flow_run_id": {"any_": [back["flow_run_id"]]},
                "type": {"any_": ["markdown"]},
            }
        },
    ).json()
    [report] = [a["data"] for a in artifacts]
    assert f"series pushed to {pushgateway}" in report, report
    assert f"alerts: BasculeRollback (warning) posted to {alertmanager}" in report, report

    # bascule stats agrees with the history: v1 and v2 went live, v2 was taken back.
    res = deploys.run(prefect_server, "stats", "--dir", cfg, "staging", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    stats = json.loads(res.stdout)
    assert [r["kind"] for r in history] == ["deploy", "deploy", "rollback"]
    assert stats["deployments"] == 2 and stats["change_failures"] == 1
    assert stats["change_failure_rate"] == 0.5
    assert stats["mean_time_to_restore_seconds"] == pytest.approx(
        step(back, "switch")["at"] - step(v2, "switch")["at"], abs=1e-3
    )
    # v2 was rolled back by hand after it succeeded; v1 knew no commit time
    assert stats["lead_times"] == 1
    assert stats["median_lead_time_seconds"] == pytest.approx(lead_time, abs=1e-3)

    # A real Prometheus scraping the Pushgateway fires the shipped rollback rule.
    def prometheus_args(data: Path, listen: str) -> list[str]:
        (data / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{RULES}]\n"
            "scrape_configs:\n"
            "  - job_name: pushgateway\n"
            "    honor_labels: true\n"
            f"    static_configs: [{{targets: ['{pushgateway.removeprefix('http://')}']}}]\n"
        )
        return [
            f"--config.file={data / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={listen}",
        ]

    started = time.monotonic()
    with running("prometheus", prometheus_args) as prometheus:

        def firing() -> dict[str, Any] | None:
            alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
            return next(
                (
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "BasculeRollbackInLastHour"
                    and a["state"] == "firing"
                ),
                None,
            )

        fired = wait_for(firing, 30, interval=0.5, what="BasculeRollbackInLastHour firing")
    print(f"prometheus_rule_fired_after_seconds={time.monotonic() - started:.1f}")
    assert fired["labels"]["app"] == "sample-app" and fired["labels"]["release"] == v2["id"]


@pytest.mark.alone
def test_an_endpoint_that_hangs_costs_its_timeout_and_none_configured_is_skipped(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with hung_endpoint() as hung:
        over = {"monitoring": {"pushgateway": hung, "alertmanager": hung, "timeout_seconds": 1}}
        env = Env.open("staging", write_envs(tmp_path, namespace, cluster.kubeconfig, over))
        release = Release(
            id="r-hung",
            image=V1,
            color="blue",
            previous_image=None,
            previous_color=None,
            started="2026-11-28T05:00:00Z",
            finished="2026-11-28T05:01:00Z",
            phase="done",
            result="rolled-back",
        )
        started = time.monotonic()
        lines = monitoring.delivered(env, release, False, logging.getLogger("test"))
        took = time.monotonic() - started
    print(f"hung_endpoints_delivery_seconds={took:.2f}")
    assert f"metrics: not delivered to {hung}" in lines and "timed out" in lines, lines
    assert f"alerts: not delivered to {hung} — ReadTimeout" in lines, lines
    assert took < 2 * 1 + 2  # two endpoints, one second each, plus the history read
    # None configured: both skipped, and said so.
    env = Env.open("staging", write_envs(tmp_path / "none", namespace, cluster.kubeconfig))
    assert monitoring.delivered(env, release, False, logging.getLogger("test")).splitlines() == [
        "metrics: skipped — no monitoring.pushgateway configured",
        "alerts: skipped — no monitoring.alertmanager configured "
        "(BasculeRollback (warning) not sent)",
    ]
