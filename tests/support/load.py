"""HTTP load driver that runs inside the cluster's network namespace.

Started as its own process (``nsenter --net=... python -m tests.support.load``) so its
sockets live where Service IPs route. Every request opens a new connection, as a fresh
client would, so kube-proxy's choice of endpoint is exercised on each one. It stops by
itself after ``--duration`` seconds or when ``--stop-file`` appears, and writes one JSON
report: every failure with its time and error, and which version answered when.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 2.0  # seconds; a slower answer is a failure


@dataclass
class Sample:
    t: float  # when the request started (epoch seconds: compared with other processes' times)
    ok: bool
    version: str | None
    error: str | None
    seconds: float = 0.0  # from the request's start until its answer or failure
    m: float = 0.0  # when it started, on the monotonic clock (the driver's pace, see Report)


@dataclass
class Report:
    """Started and stopped twice: in epoch seconds, and on the monotonic clock, which a step
    of the wall clock does not move (a VM's clock set forward after it was paused: seen as
    a 19.7 s "gap" in a 57 s test)."""

    started: float
    started_m: float = 0.0
    stopped: float = 0.0
    stopped_m: float = 0.0
    samples: list[Sample] = field(default_factory=list)


def one_request(
    host: str, port: int, path: str, timeout: float, versions: frozenset[str]
) -> Sample:
    """One GET. Any exception is a failed sample, never a lost one; from /version, a 200
    must name one of ``versions``: an answer from anything else is no success."""
    t, began = time.time(), time.monotonic()
    ok, version, error = _get(host, port, path, timeout, versions)
    return Sample(t, ok, version, error, time.monotonic() - began, began)


def _get(
    host: str, port: int, path: str, timeout: float, versions: frozenset[str]
) -> tuple[bool, str | None, str | None]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return False, None, f"HTTP {resp.status}"
        if not path.startswith("/version"):
            return True, None, None
        version = json.loads(body)["version"]
        if version not in versions:
            return False, str(version), f"unknown version in {body[:200]!r}"
        return True, version, None
    except Exception as exc:
        return False, None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def run(
    url: str,
    rps: float,
    duration: float,
    stop_file: Path | None,
    workers: int,
    versions: frozenset[str],
) -> Report:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "", parts.port or 80, parts.path or "/"
    report = Report(started=time.time(), started_m=time.monotonic())
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    interval = workers / rps  # each worker keeps its own share of the rate

    def worker(offset: float) -> None:
        next_at = time.monotonic() + offset
        while time.monotonic() < deadline and not (stop_file and stop_file.exists()):
            sample = one_request(host, port, path, REQUEST_TIMEOUT, versions)
            with lock:
                report.samples.append(sample)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [
        threading.Thread(target=worker, args=(i * interval / workers,), daemon=True)
        for i in range(workers)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    report.stopped, report.stopped_m = time.time(), time.monotonic()
    report.samples.sort(key=lambda s: s.t)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--rps", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=300.0, help="upper bound, seconds")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--stop-file", type=Path)
    ap.add_argument("--versions", default="", help="comma-separated versions /version may answer")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    versions = frozenset(v for v in args.versions.split(",") if v)
    report = run(args.url, args.rps, args.duration, args.stop_file, args.workers, versions)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(report)))
    tmp.rename(args.out)


if __name__ == "__main__":
    main()
