"""A run's Prefect client (bascule.prefect_client, ``Prefect.in_run``): busy Prefect answers
retried after 0.1, 0.2, ... s, not Prefect's 2 s, through Prefect's own client against a
local HTTP server that answers 503 first."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from uuid import uuid4

import httpx
import pytest
from prefect.settings import (
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    get_current_settings,
    temporary_settings,
)

from bascule import prefect_client, retry
from bascule.prefect_client import Prefect


def answer(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("PATCH", "http://prefect/api/x")
    return httpx.HTTPStatusError("", request=request, response=httpx.Response(status))


def test_busy_answers_are_sent_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    errors = [answer(503), httpx.ConnectError("refused"), answer(429)]

    def call() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    assert prefect_client.quickly(call, tries=5) == "done"
    assert waits == [0.1, 0.2, 0.4]


@pytest.mark.parametrize("status", [404, 409, 423])
def test_other_answers_raise_at_once(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    monkeypatch.setattr(retry.time, "sleep", lambda s: pytest.fail(f"slept {s}"))

    def call() -> None:
        raise answer(status)

    with pytest.raises(httpx.HTTPStatusError) as raised:
        prefect_client.quickly(call, tries=5)
    assert raised.value.response.status_code == status


def test_the_last_busy_answer_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)

    def call() -> None:
        raise answer(503)

    with pytest.raises(httpx.HTTPStatusError):
        prefect_client.quickly(call, tries=2)
    assert waits == [0.1, 0.2]


class Busy(BaseHTTPRequestHandler):
    """Answers each PATCH 503 ``busy`` times, then 204, as a Prefect server whose SQLite
    database is locked for a moment."""

    busy = 0
    patches: ClassVar[list[float]] = []

    def do_GET(self) -> None:  # the client's version check; no CSRF tokens (404)
        body = json.dumps("3.0.0").encode()
        self.send_response(200 if self.path.endswith("/version") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Busy.patches.append(time.monotonic())
        status = 503 if len(Busy.patches) <= Busy.busy else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_prefects_client_does_not_wait_its_backoff(busy_server: str) -> None:
    Busy.busy, Busy.patches = 2, []
    with temporary_settings({PREFECT_API_URL: busy_server}):
        started = time.monotonic()
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 5}), Prefect.in_run() as prefect:
            prefect.send(lambda api: api.update_flow_run_labels(uuid4(), {"a": "b"}))
        took = time.monotonic() - started
    assert len(Busy.patches) == 3
    # Prefect's own client waits about 2 s after the first 503 even with retries set to 0.
    assert took < 1.5, took
    assert Busy.patches[1] - Busy.patches[0] == pytest.approx(0.1, abs=0.08)


def test_its_clients_share_one_tls_context_made_as_prefects_own() -> None:
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        made = prefect_client.tls_context()
        assert prefect_client.tls_context() is made  # made once, not per client
        assert made.verify_mode == ssl.CERT_REQUIRED and made.check_hostname
        with Prefect.in_run() as quick:
            # httpx keeps it in its connection pool: the client did not make its own.
            assert quick.client._client._transport._pool._ssl_context is made  # type: ignore[attr-defined]
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        unchecked = prefect_client.tls_context()
        assert unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname


def test_a_runs_client_settings_are_the_current_ones_without_retries() -> None:
    """Derived by a copy (no source read again: issue 24), and only max_retries differs."""
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        current = get_current_settings()
        with prefect_client._without_client_retries():
            derived = get_current_settings()
            assert PREFECT_CLIENT_MAX_RETRIES.value() == 0
        assert current.client.max_retries != 0
        assert derived.model_dump() == {
            **current.model_dump(),
            "client": {**current.client.model_dump(), "max_retries": 0},
        }
