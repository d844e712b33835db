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
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import deploys
from tests.support.cluster import Cluster, LoadDriver
from tests.support.envs import write_envs
from tests.support.prometheus import Prometheus

pytestmark = [pytest.mark.cluster, pytest.mark.prefect]
V1, V2, V3 = (f"bascule.local/sample-app:{v}" for v in ("v1", "v2", "v3"))
APP = 'namespace="{namespace}",app="{app}"'
TRAFFIC = f'{APP},release="{{release}}",path!~"/metrics|/readyz|/healthz"'
ERROR_RATIO = (
    f'(sum(rate(http_requests_total{{{TRAFFIC},code=~"5.."}}[3s])) or vector(0))'
    f" / sum(rate(http_requests_total{{{TRAFFIC}}}[3s]))"
)


def p95(release: str, window: str) -> str:
    return (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
        f'{{{APP},release="{{{release}}}",path="/version"}}[{window}])))'
    )


QUERIES: list[dict[str, Any]] = [
    {
        "name": "all-scraped",
        "query": f'min(up{{{APP},release="{{release}}"}})',
        "condition": "result == 1",
        "phases": ["preview"],
    },
    {"name": "error-ratio", "query": ERROR_RATIO, "condition": "result < 0.03"},
    {"name": "latency-p95", "query": p95("release", "3s"), "condition": "result < 0.2"},
    {
        # The new version against the old one's baseline: it served until the switch.
        "name": "latency-vs-baseline",
        "query": f"{p95('release', '5s')} / {p95('old_release', '1m')}",
        "condition": "result < 20",
    },
]
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
        "verification": {"window_seconds": 12, "interval_seconds": 1},
        "rollout": {"scale_down_delay_seconds": 12},
        "analysis": analysis,
    }
    merged = {**base, **over, "analysis": {**analysis, **over.get("analysis", {})}}
    path = tmp / f"cfg-{uuid.uuid4().hex[:6]}"
    return str(write_envs(path, ns, cluster.kubeconfig, merged, environments=("staging",)))


def deploy(api: str, cfg: str, image: str) -> Any:
    return deploys.run(api, "deploy", "--dir", cfg, "staging", "--image", image, "--redeploy")


def artifacts(api: str, run_id: str) -> tuple[str, list[dict[str, str]]]:
    """The run's markdown report and its analysis table."""
    arts = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}}},
    ).json()
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
    cfg = config(tmp_path_factory.mktemp("live"), cluster, ns, prometheus.url)
    res = deploy(prefect_server, cfg, V1)
    assert res.returncode == 0, res.stdout + res.stderr
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def serving(cluster: Cluster, ns: str) -> str:
    code, body = cluster.http_get(deploys.service_url(cluster, ns))
    assert code == 200, body
    return str(json.loads(body)["version"])


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
    assert report.failures == [], report.failures[:5]
    last = deploys.history(cluster, live)[-1]
    assert (last["image"], last["result"]) == (V2, "succeeded")
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
    active = [r for r in table if r["phase"] == "active"]
    assert all(r["verdict"] == "successful" for r in active), active
    # Evaluated on data, every second through the window, not passed for want of it.
    measured = [r for r in table if r["value"] != "-"]
    assert len([r for r in measured if r["name"] == "error-ratio"]) >= 8, table
    assert any(r["name"] == "latency-vs-baseline" for r in measured), table
    assert "## Analysis" in markdown and markdown.count("| active | error-ratio:") >= 8, markdown
    assert "| smoke-http-active | ok |" in markdown, markdown
