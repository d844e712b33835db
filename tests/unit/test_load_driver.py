"""The load driver's own honesty: every request it sends is a sample, an answer from an
unknown version is no success, and a driver that did not send its load fails the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import load
from tests.support.cluster import LoadReport


@dataclass
class Server:
    url: str
    body: bytes = b'{"version": "v1"}'

    def drive(self, body: bytes) -> load.Report:
        """40 requests a second for half a second, answered with ``body``."""
        self.body = body
        return load.run(self.url, 40, 0.5, None, 2, frozenset({"v1", "v2"}))


@pytest.fixture
def server() -> Iterator[Server]:
    """A loopback HTTP server answering 200 with the server's current body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(handle.body)))
            self.end_headers()
            self.wfile.write(handle.body)

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    handle = Server(f"http://127.0.0.1:{httpd.server_address[1]}/version")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handle
    httpd.shutdown()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"version": "v9"}', "unknown version"),
        (b"[1]", "TypeError"),  # an exception the driver used to let kill its thread
        (b"{}", "KeyError"),
        (b"<html>", "JSONDecodeError"),
    ],
)
def test_every_bad_answer_is_a_failed_sample(server: Server, body: bytes, error: str) -> None:
    report = server.drive(body)
    assert len(report.samples) >= 15  # every request kept: 40/s for 0.5 s
    assert all(not s.ok and error in (s.error or "") for s in report.samples), report.samples[:2]


def test_known_versions_succeed(server: Server) -> None:
    report = server.drive(b'{"version": "v2", "pod": "p"}')
    assert len(report.samples) >= 15
    assert all(s.ok and s.version == "v2" for s in report.samples)


def samples(times: list[float]) -> list[dict[str, object]]:
    """Requests started at ``times``, the same on both clocks."""
    return [{"t": t, "m": t, "ok": True, "version": "v1", "error": None} for t in times]


def test_a_driver_that_sent_its_load_passes() -> None:
    LoadReport(
        samples([i / 100 for i in range(1000)]), 0.0, 10.0, 100, 0.0, 10.0
    ).assert_sustained()


@pytest.mark.parametrize(
    ("times", "problem"),
    [
        ([i / 50 for i in range(500)], "too few"),  # half the rate asked
        # enough requests in all, at 120/s, but none for 2.5 s
        ([i / 120 for i in range(480)] + [6.5 + i / 120 for i in range(420)], "stalled"),
        ([i / 110 for i in range(860)], "stalled"),  # stopped 2.2 s before the end
    ],
    ids=["starved", "stalled-midway", "stopped-early"],
)
def test_a_starved_or_stalled_driver_fails(times: list[float], problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        LoadReport(samples(times), 0.0, 10.0, 100, 0.0, 10.0).assert_sustained()


def test_a_step_of_the_wall_clock_is_no_stall_a_stall_on_the_monotonic_clock_is() -> None:
    """The wall clock set 19.7 s forward midway (a paused VM's, once resumed): the epoch
    times show a gap the driver never had; its monotonic clock shows none."""
    steady = [i / 100 for i in range(1000)]
    epoch = [*steady[:500], *(t + 19.7 for t in steady[500:])]
    stepped = [{**s, "m": m} for s, m in zip(samples(epoch), steady, strict=True)]
    LoadReport(stepped, 0.0, 29.7, 100, 0.0, 10.0).assert_sustained()
    # 125/s, but nothing for 3 s on the monotonic clock too: a stall.
    paced = [i / 125 for i in range(500)]
    stall = [*paced, *(t + 7 for t in paced)]
    with pytest.raises(AssertionError, match="stalled"):
        LoadReport(samples(stall), 0.0, 11.0, 100, 0.0, 11.0).assert_sustained()
