"""The analysis gate as the tests, the benchmark and the demo configure it for the sample
app, and how its detection is measured from a load driver's samples."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import LoadReport
from tests.support.envs import merge

APP = 'namespace="{namespace}",app="{app}"'
# Requests of the release under analysis that clients made: no probes, no scrapes.
TRAFFIC = f'{APP},release="{{release}}",path!~"/metrics|/readyz|/healthz"'
ERROR_RATIO = (
    f'(sum(rate(http_requests_total{{{TRAFFIC},code=~"5.."}}[3s])) or vector(0))'
    f" / sum(rate(http_requests_total{{{TRAFFIC}}}[3s]))"
)


def p95(release: str, window: str) -> str:
    """The 95th percentile of /version's latency of ``{release}`` or ``{old_release}``."""
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


def detection_seconds(release: dict[str, Any], report: LoadReport) -> float:
    """From the first injected error a client saw to the start of the rollback's switch."""
    back = next(s for s in release["steps"] if s["name"] == "rollback-switch")
    went_bad = min(s["t"] for s in report.failures if s["error"] == "HTTP 500")
    return float(back["at"] - back["seconds"] - went_bad)


def write_gated(
    source: Path, target: Path, prometheus: str, env: dict[str, str], namespace: str | None
) -> None:
    """A copy of the deployments directory ``source`` whose staging runs the gate."""
    shutil.copytree(source, target)
    path = target / "staging.yaml"
    data = yaml.safe_load(path.read_text())
    data = merge(
        data,
        {
            "env": env,
            # /version answers the injected errors too: only the metrics should tell.
            "checks": {"health": [{"name": "ready", "path": "/readyz", "successes": 1}]},
            "verification": {"window_seconds": 16, "interval_seconds": 1},
            "rollout": {"scale_down_delay_seconds": 16},
            "analysis": {"prometheus": prometheus, "queries": QUERIES, "interval_seconds": 1},
        },
    )
    if namespace:
        data["namespace"] = namespace
    data.pop("migrations", None)  # the copy has no sample app beside it; the gate needs none
    path.write_text(yaml.safe_dump(data, sort_keys=False))


if __name__ == "__main__":
    # python -m tests.support.gate SOURCE TARGET PROMETHEUS_URL [NAME=VALUE ...]: the demo's.
    source, target, url, *pairs = sys.argv[1:]
    write_gated(
        Path(source),
        Path(target),
        url,
        dict(p.split("=", 1) for p in pairs),
        os.environ.get("DEMO_NAMESPACE"),
    )
