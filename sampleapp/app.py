"""The sample web service that Bascule deploys: `python3 -m sampleapp.app`.

Endpoints: /healthz, /readyz, /version, /metrics, /api/items. Settings and failure knobs come
from the environment (see README.md). On SIGTERM it stops being ready at once, keeps serving
for DRAIN_SECONDS so the Service can move traffic away, then stops and exits 0.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from sampleapp import faults, metrics
from sampleapp.db import DatabaseError, ItemStore

INFLIGHT_WAIT_SECONDS = 5.0  # after the drain, how long requests already running may finish
ERROR_LOG_INTERVAL = 1.0  # seconds; a database outage at 100 req/s must not flood the log


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} sampleapp: {message}", flush=True)


class App:
    """Everything a request handler needs: settings, clocks, state and the database."""

    def __init__(
        self,
        settings: faults.Settings,
        store: ItemStore,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rng = rng
        self.started = time.monotonic()
        self.metrics = metrics.Metrics(settings.version, settings.color, settings.pod, time.time())
        self.draining = threading.Event()
        self._inflight = 0
        self._idle = threading.Condition()
        self._error_lock = threading.Lock()
        self._error_logged_at = -ERROR_LOG_INTERVAL
        self._errors_unlogged = 0

    def ready(self) -> tuple[bool, str]:
        return faults.readiness(
            time.monotonic(), self.started, self.settings, self.draining.is_set()
        )

    def enter(self) -> None:
        with self._idle:
            self._inflight += 1

    def leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Waits for running requests to finish; returns how many were still running."""
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout)
            return self._inflight

    def log_error(self, message: str) -> None:
        """Logs an error, at most once per ERROR_LOG_INTERVAL, counting the ones held back."""
        now = time.monotonic()
        with self._error_lock:
            if now - self._error_logged_at < ERROR_LOG_INTERVAL:
                self._errors_unlogged += 1
                return
            held_back, self._errors_unlogged = self._errors_unlogged, 0
            self._error_logged_at = now
        log(
            message
            + (f" (and {held_back} more errors since the last one logged)" if held_back else "")
        )

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """Answers one GET: (status, content type, body)."""
        now = time.monotonic()
        if delay := faults.added_latency(path, now, self.started, self.settings):
            time.sleep(delay)
        if faults.inject_error(path, now, self.started, self.settings, self.rng):
            return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "injected error (ERROR_RATE)"})
        if path == "/healthz":
            ok, reason = faults.health(self.settings)
            return _text(HTTPStatus.OK if ok else HTTPStatus.INTERNAL_SERVER_ERROR, reason)
        if path == "/readyz":
            ok, reason = self.ready()
            return _text(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, reason)
        if path == "/version":
            ok, reason = faults.health(self.settings)
            if not ok:
                return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": reason})
            s = self.settings
            return _json(HTTPStatus.OK, {"version": s.version, "pod": s.pod, "color": s.color})
        if path == "/metrics":
            ready, _ = self.ready()
            body = self.metrics.render(time.time(), ready, self.draining.is_set())
            return HTTPStatus.OK, metrics.CONTENT_TYPE, body.encode()
        if path == "/api/items":
            try:
                return _json(HTTPStatus.OK, self.store.items())
            except DatabaseError as exc:
                self.log_error(f"/api/items: database error: {exc}")
                return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"database: {exc}"})
        return _json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})


def _json(status: int, value: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(value).encode() + b"\n"


def _text(status: int, text: str) -> tuple[int, str, bytes]:
    return status, "text/plain; charset=utf-8", text.encode() + b"\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as load balancers and load drivers expect
    server_version = "sampleapp"
    timeout = 60  # idle keep-alive connections are closed after this
    app: App  # set on the subclass that serve() makes

    def do_GET(self) -> None:  # the name http.server dispatches to
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        app = self.app
        app.enter()
        begin = time.perf_counter()
        path = self.path.split("?", 1)[0]
        status: int = HTTPStatus.INTERNAL_SERVER_ERROR
        counted = False
        try:
            status, content_type, body = app.respond(path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if app.draining.is_set():
                # Kept-alive connections would stick to this pod after it leaves the endpoints.
                self.send_header("Connection", "close")
                self.close_connection = True
            # Counted before the answer leaves: whoever reads /metrics next has seen it.
            app.metrics.observe(path, int(status), time.perf_counter() - begin)
            counted = True
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if not counted:
                app.metrics.observe(path, int(status), time.perf_counter() - begin)
            app.leave()

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request is too much at hundreds of requests a second; errors still log.
        pass

    def log_error(self, format: str, *args: Any) -> None:
        log(f"{self.address_string()}: {format % args}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not join idle keep-alive threads on close: the drain already gave them their time.
    block_on_close = False
    allow_reuse_address = True


def serve(app: App, host: str = "0.0.0.0") -> Server:
    handler = type("BoundHandler", (Handler,), {"app": app})
    return Server((host, app.settings.port), handler)


def main() -> int:
    try:
        settings = faults.parse_settings(os.environ)
    except faults.SettingsError as exc:
        print(f"sampleapp: bad setting: {exc}", file=sys.stderr, flush=True)
        return 2
    if settings.crash_on_start:
        print("sampleapp: CRASH_ON_START is set: exiting with code 1", file=sys.stderr, flush=True)
        return 1
    store = ItemStore(settings.database_url)
    app = App(settings, store)
    host = os.environ.get("HOST", "0.0.0.0")
    server = serve(app, host)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            app.draining.set()  # readiness fails from this moment
            stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    thread.start()
    log(
        f"version {settings.version} listening on {host}:{server.server_address[1]}"
        f" (pod {settings.pod or '-'}, color {settings.color or '-'}, start delay"
        f" {settings.start_delay:g} s, drain {settings.drain_seconds:g} s)"
    )
    while not stop.wait(1.0):
        pass
    log(f"SIGTERM: not ready any more; serving for {settings.drain_seconds:g} s to drain")
    time.sleep(settings.drain_seconds)
    server.shutdown()
    left = app.wait_idle(INFLIGHT_WAIT_SECONDS)
    server.server_close()
    store.close()
    log(f"stopped{f' ({left} requests cut off)' if left else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
