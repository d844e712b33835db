"""A real Prefect server for tests: ``prefect server start`` on loopback, with its own
PREFECT_HOME in a temporary directory, stopped by its pid.

``prefect_server`` is a session-scoped fixture yielding the API URL, on a database of its own
on the local cluster's PostgreSQL (SQLite answered 503 under the suite's concurrent flows);
import it into tests/conftest.py with ``pytest_terminal_summary``, which prints how many
answers the server gave that its clients had to retry. ``running_prefect_server`` is the same
as a context manager, for a test that needs a server of its own (for example one with basic
auth), on SQLite unless given a database.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import processes
from tests.support.cluster import Cluster
from tests.support.postgres import database
from tests.support.shared import shared

# A cold start migrates a fresh database and builds the UI's static files.
START_TIMEOUT = 120.0
# What the server logs for each 503 it answers (PREFECT_SERVER_LOG_RETRYABLE_ERRORS): a
# database error its clients retry. It answers no 429, 502 or 408 of its own.
RETRYABLE_LOGGED = "Encountered retryable exception in request"
# That count for each server this session started and stopped, for the terminal summary.
_RETRIED: list[int] = []


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path
    pid: int
    auth_string: str | None

    def retried_answers(self) -> int:
        """How many 503s the server has answered so far (each one retried by its client)."""
        return (self.home / "server.log").read_text(errors="replace").count(RETRYABLE_LOGGED)

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a Prefect client process (serve, worker, CLI) using this server."""
        env = dict(os.environ if base is None else base)
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home / "client"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        env.pop("PREFECT_API_KEY", None)
        env.pop("PREFECT_API_AUTH_STRING", None)
        if self.auth_string is not None:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_prefect_server(
    auth_string: str | None = None, database_url: str | None = None
) -> Iterator[PrefectServer]:
    """Starts a Prefect server, waits until ``/api/health`` answers, stops it on exit.

    With ``auth_string`` ("user:password") the server requires HTTP basic auth, as a
    self-hosted server with PREFECT_SERVER_API_AUTH_STRING does. With ``database_url``
    (``postgresql+asyncpg://…``) it keeps its data there, else in SQLite under its home.
    """
    with tempfile.TemporaryDirectory(prefix="bascule-prefect-") as tmp:
        home = Path(tmp)
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        env = dict(os.environ)
        for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"):
            env.pop(name, None)
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            # The UI reads the API address from here; the default would be the port 4200.
            PREFECT_UI_API_URL=api_url,
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            # Paused runs whose pause timed out are failed by the server only this often
            # (default 5 s): a flow that raced that expiry loses every time, not sometimes.
            PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS="60",
            # One log line per 503 answered: what prefect_api_retries counts.
            PREFECT_SERVER_LOG_RETRYABLE_ERRORS="true",
        )
        if database_url is not None:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        if auth_string is not None:
            env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        log_path = home / "server.log"
        with log_path.open("wb") as log:
            # A session of its own: stopping the group also stops anything the server forks.
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = PrefectServer(api_url=api_url, home=home, pid=proc.pid, auth_string=auth_string)
        try:
            _wait_healthy(api_url, proc, log_path)
            yield server
        finally:
            processes.stop(proc, group=True)
            _RETRIED.append(server.retried_answers())


def _wait_healthy(api_url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            # /health is open even when the server requires basic auth.
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    processes.stop(proc, group=True)
    raise RuntimeError(f"prefect server not healthy after {START_TIMEOUT:.0f}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def server_database(cluster: Cluster) -> Iterator[str | None]:
    """A new database of the cluster's PostgreSQL for a Prefect server, as its connection
    URL, dropped afterwards (so each server starts clean); None (SQLite) when the cluster
    under test has no PostgreSQL of tests/cluster."""
    if cluster.cluster_dir is None:
        yield None
        return
    with database(cluster) as db:
        yield db.url().replace("postgresql://", "postgresql+asyncpg://", 1)


@contextlib.contextmanager
def server_on_cluster(cluster: Cluster) -> Iterator[PrefectServer]:
    """A Prefect server on a new database of the cluster's PostgreSQL (the session's, or a
    module's own); it stops before its database is dropped."""
    with server_database(cluster) as url, running_prefect_server(database_url=url) as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL of a Prefect server shared by the whole test session."""
    with shared("prefect_server", tmp_path_factory, lambda: server_on_cluster(cluster)) as server:
        yield server.api_url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """``prefect_api_retries=N``: the 503s the session's Prefect servers answered."""
    if _RETRIED:
        terminalreporter.write_line(f"prefect_api_retries={sum(_RETRIED)}")
