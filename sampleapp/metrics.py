"""Request metrics in the Prometheus text format, without the client library (stdlib only)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable

# Bounded label values: anything else is counted as "other", so a scan of random URLs cannot
# grow the metrics without limit.
KNOWN_PATHS = ("/healthz", "/readyz", "/version", "/metrics", "/api/items")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ERROR_CODE = 500  # what the app answers when it fails (injected errors included)


def path_label(path: str) -> str:
    return path if path in KNOWN_PATHS else "other"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs) + "}"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Metrics:
    """Thread-safe counters and a latency histogram, rendered on each scrape."""

    def __init__(self, version: str, color: str, pod: str, start_wall: float) -> None:
        self._info = (("version", version), ("color", color), ("pod", pod))
        self._start_wall = start_wall
        self._lock = threading.Lock()
        self._requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        # per path: a count per bucket (the last one is +Inf), the sum and the count
        self._buckets: dict[str, list[int]] = {}
        self._sums: defaultdict[str, float] = defaultdict(float)

    def observe(self, path: str, code: int, seconds: float) -> None:
        label = path_label(path)
        with self._lock:
            # The error series exists at 0 from a path's first request: an error ratio (a
            # rate() over it) then has data from the first error on, not from the second scrape.
            self._requests.setdefault((label, ERROR_CODE), 0)
            self._requests[(label, code)] += 1
            counts = self._buckets.setdefault(label, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sums[label] += seconds

    def render(self, now_wall: float, ready: bool, draining: bool) -> str:
        with self._lock:
            requests = sorted(self._requests.items())
            buckets = {path: list(counts) for path, counts in sorted(self._buckets.items())}
            sums = dict(self._sums)
        lines = [
            "# HELP app_info Version, color and pod of this instance; always 1.",
            "# TYPE app_info gauge",
            f"app_info{_labels(self._info)} 1",
            "# HELP app_uptime_seconds Seconds since the process started.",
            "# TYPE app_uptime_seconds gauge",
            f"app_uptime_seconds {_num(round(now_wall - self._start_wall, 3))}",
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {_num(round(self._start_wall, 3))}",
            "# HELP app_ready Whether /readyz answers 200.",
            "# TYPE app_ready gauge",
            f"app_ready {int(ready)}",
            "# HELP app_draining Whether SIGTERM was received and the app is draining.",
            "# TYPE app_draining gauge",
            f"app_draining {int(draining)}",
            "# HELP http_requests_total HTTP requests answered, by path and status code.",
            "# TYPE http_requests_total counter",
        ]
        for (path, code), count in requests:
            lines.append(
                f"http_requests_total{_labels([('path', path), ('code', str(code))])} {count}"
            )
        lines += [
            "# HELP http_request_duration_seconds Time to answer an HTTP request, by path.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for path, counts in buckets.items():
            cumulative = 0
            for bound, count in zip((*map(_num, BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                labels = _labels([("path", path), ("le", bound)])
                lines.append(f"http_request_duration_seconds_bucket{labels} {cumulative}")
            lines.append(
                f"http_request_duration_seconds_sum{_labels([('path', path)])} {sums[path]!r}"
            )
            lines.append(
                f"http_request_duration_seconds_count{_labels([('path', path)])} {cumulative}"
            )
        return "\n".join(lines) + "\n"
