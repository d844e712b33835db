"""The analysis gate as the tests, the benchmark and the demo configure it for the sample
app, and how its detection is measured from a load driver's samples."""

from __future__ import annotations

from typing import Any

from tests.support.cluster import LoadReport

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
