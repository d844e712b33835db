"""The sample app: its pure decisions, the real server on loopback, its smoke suite and its
migrations (against a throwaway PostgreSQL when one can be started here)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sampleapp import db, faults, metrics, smoke

REPO = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO / "sampleapp" / "alembic.ini"


# --- pure decisions ---------------------------------------------------------------------


def never_called() -> float:
    raise AssertionError("rng drawn although no error was due")


def test_should_fail_waits_for_error_after_and_honours_the_rate() -> None:
    assert not faults.should_fail(now=104.0, started=100.0, rate=100, after=5, rng=never_called)
    assert not faults.should_fail(now=200.0, started=100.0, rate=0, after=0, rng=never_called)
    assert faults.should_fail(now=105.0, started=100.0, rate=100, after=5, rng=lambda: 0.999)
    assert faults.should_fail(now=1.0, started=0.0, rate=50, after=0, rng=lambda: 0.49)
    assert not faults.should_fail(now=1.0, started=0.0, rate=50, after=0, rng=lambda: 0.5)
    assert faults.should_fail(now=1.0, started=0.0, rate=0.5, after=0, rng=lambda: 0.004)


def test_probes_and_metrics_are_exempt_from_injected_errors() -> None:
    settings = faults.Settings(error_rate=100)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert not faults.inject_error(path, 10.0, 0.0, settings, never_called)
    for path in ("/version", "/api/items", "/nope"):
        assert faults.inject_error(path, 10.0, 0.0, settings, lambda: 0.0)


def test_readiness_reasons() -> None:
    base = faults.Settings(start_delay=2)
    assert faults.readiness(1.0, 0.0, base, draining=False) == (False, "starting")
    assert faults.readiness(2.0, 0.0, base, draining=False) == (True, "ready")
    assert faults.readiness(9.0, 0.0, base, draining=True) == (False, "draining")
    failing = faults.Settings(fail_readiness=True)
    assert faults.readiness(9.0, 0.0, failing, draining=False)[0] is False
    assert faults.health(faults.Settings(fail_health=True))[0] is False


def test_parse_settings_defaults_and_knobs() -> None:
    assert faults.parse_settings({}) == faults.Settings()
    s = faults.parse_settings(
        {
            "PORT": "9000",
            "APP_VERSION": "v2",
            "APP_COLOR": "green",
            "HOSTNAME": "pod-1",
            "FAIL_READINESS": "true",
            "ERROR_RATE": "12.5",
            "ERROR_AFTER": "30",
            "START_DELAY": "4",
            "DRAIN_SECONDS": "0",
            "CRASH_ON_START": "0",
        }
    )
    assert (s.port, s.version, s.color, s.pod) == (9000, "v2", "green", "pod-1")
    assert s.fail_readiness and not s.fail_health and not s.crash_on_start
    assert (s.error_rate, s.error_after, s.start_delay, s.drain_seconds) == (12.5, 30, 4, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("ERROR_RATE", "150"), ("ERROR_RATE", "ten"), ("PORT", "8080.5"), ("DRAIN_SECONDS", "-1")],
)
def test_parse_settings_names_the_bad_variable(name: str, value: str) -> None:
    with pytest.raises(faults.SettingsError, match=name):
        faults.parse_settings({name: value})


def test_metrics_render_counters_histogram_and_info() -> None:
    m = metrics.Metrics(version='v"1', color="blue", pod="p", start_wall=1000.0)
    m.observe("/version", 200, 0.004)
    m.observe("/version", 200, 0.3)
    m.observe("/version", 500, 7.0)
    m.observe("/random/path", 404, 0.001)
    text = m.render(now_wall=1010.5, ready=True, draining=False)
    assert 'app_info{version="v\\"1",color="blue",pod="p"} 1' in text
    assert "app_uptime_seconds 10.5" in text
    assert 'http_requests_total{path="/version",code="200"} 2' in text
    assert 'http_requests_total{path="/version",code="500"} 1' in text
    assert 'http_requests_total{path="other",code="404"} 1' in text
    # The error series of every path seen exists before its first error.
    assert 'http_requests_total{path="other",code="500"} 0' in text
    assert 'http_request_duration_seconds_bucket{path="/version",le="0.005"} 1' in text
    assert 'http_request_duration_seconds_bucket{path="/version",le="0.5"} 2' in text
    assert 'http_request_duration_seconds_bucket{path="/version",le="+Inf"} 3' in text
    assert 'http_request_duration_seconds_count{path="/version"} 3' in text
    assert "app_ready 1" in text and "app_draining 0" in text
    assert text.endswith("\n")


def test_items_query_includes_description_only_once_it_exists() -> None:
    assert db.select_items_sql({"id", "name", "created_at"}) == (
        "SELECT id, name, created_at FROM items ORDER BY id LIMIT 100"
    )
    assert "created_at, description FROM" in db.select_items_sql({"name", "description"})


def test_smoke_run_reports_each_check() -> None:
    answers = {
        "http://app/healthz": (200, b"ok"),
        "http://app/readyz": (503, b"starting"),
        "http://app/version": (200, b'{"version": "v1"}'),
        "http://app/api/items": (200, b"{}"),
    }
    results = smoke.run("http://app/", smoke.plan("v2", items=True), 1.0, lambda u, t: answers[u])
    by_name = {r.name: r for r in results}
    assert by_name["healthz"].ok
    assert not by_name["readyz"].ok and "status 503" in by_name["readyz"].detail
    assert "want 'v2'" in by_name["version"].detail
    assert "want a JSON list" in by_name["items"].detail
    assert by_name["version"].line().startswith("FAIL version (")


# --- the real server on loopback ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "APP_VERSION": "v7",
        "APP_COLOR": "green",
        "HOSTNAME": "pod-a",
        **extra,
    }


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class RunningApp:
    proc: subprocess.Popen[str]
    port: int

    def get(self, path: str) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()


@contextlib.contextmanager
def running_app(**env: str) -> Iterator[RunningApp]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sampleapp.app"],
        env=app_env(port, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"app exited with {proc.returncode}: {out}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise AssertionError("app did not listen within 10 s")
            time.sleep(0.02)
        yield RunningApp(proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def test_endpoints() -> None:
    with running_app(DATABASE_URL="") as app:
        assert app.get("/healthz").status == 200
        assert app.get("/readyz").status == 200
        version = app.get("/version")
        assert version.status == 200
        assert version.headers["content-type"] == "application/json"
        assert version.json() == {"version": "v7", "pod": "pod-a", "color": "green"}
        items = app.get("/api/items")
        assert items.status == 503
        assert "DATABASE_URL is not set" in str(items.json())
        assert app.get("/nope").status == 404
        text = app.get("/metrics").body.decode()
        assert 'app_info{version="v7",color="green",pod="pod-a"} 1' in text
        assert 'http_requests_total{path="/version",code="200"} 1' in text
        assert 'http_requests_total{path="/api/items",code="503"} 1' in text
        assert 'http_request_duration_seconds_count{path="/healthz"} 1' in text


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with running_app() as app:
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/version")
            r = conn.getresponse()
            assert (r.status, r.getheader("connection")) == (200, None)
            r.read()
        conn.close()


def test_unreachable_database_answers_503_quickly() -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nothing"
    with running_app(DATABASE_URL=url) as app:
        begin = time.monotonic()
        r = app.get("/api/items")
        assert r.status == 503 and "database:" in str(r.json())
        assert "secret" not in r.body.decode()
        assert time.monotonic() - begin < 3


def test_fail_readiness() -> None:
    with running_app(FAIL_READINESS="1") as app:
        assert app.get("/readyz").status == 503
        assert app.get("/healthz").status == 200
        assert "app_ready 0" in app.get("/metrics").body.decode()


def test_fail_health() -> None:
    with running_app(FAIL_HEALTH="1") as app:
        assert app.get("/healthz").status == 500
        assert app.get("/version").status == 500
        assert app.get("/readyz").status == 200


def test_error_rate_starts_after_error_after() -> None:
    with running_app(ERROR_RATE="100", ERROR_AFTER="1") as app:
        assert app.get("/version").status == 200
        time.sleep(1.1)
        assert app.get("/version").status == 500
        assert app.get("/api/items").status == 500
        for path in ("/healthz", "/readyz", "/metrics"):
            assert app.get(path).status == 200
        assert (
            'http_requests_total{path="/version",code="500"} 1' in app.get("/metrics").body.decode()
        )


def test_latency_starts_after_error_after_and_spares_probes() -> None:
    with running_app(LATENCY_MS="300", ERROR_AFTER="0.5") as app:
        begin = time.perf_counter()
        app.get("/version")
        assert time.perf_counter() - begin < 0.25
        time.sleep(0.6)
        begin = time.perf_counter()
        assert app.get("/version").status == 200
        assert time.perf_counter() - begin >= 0.3
        begin = time.perf_counter()
        assert app.get("/readyz").status == 200
        assert time.perf_counter() - begin < 0.25


def test_error_rate_is_a_fraction_of_requests() -> None:
    with running_app(ERROR_RATE="50") as app:
        codes = [app.get("/version").status for _ in range(100)]
    assert set(codes) == {200, 500}
    assert 20 <= codes.count(500) <= 80


def test_start_delay_fails_readiness_until_it_passes() -> None:
    with running_app(START_DELAY="1") as app:
        r = app.get("/readyz")
        assert (r.status, r.body) == (503, b"starting\n")
        assert app.get("/healthz").status == 200
        time.sleep(1.1)
        assert app.get("/readyz").status == 200


def test_crash_on_start_exits_1_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sampleapp.app"],
        env=app_env(free_port(), CRASH_ON_START="1"),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1
    assert "CRASH_ON_START" in result.stderr


def test_bad_setting_exits_2_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sampleapp.app"],
        env=app_env(free_port(), ERROR_RATE="lots"),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert "ERROR_RATE" in result.stderr


def test_sigterm_drains_then_exits_0() -> None:
    with running_app(DRAIN_SECONDS="1.5") as app:
        assert app.get("/readyz").status == 200
        sent = time.monotonic()
        app.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = app.get("/readyz")
        assert (ready.status, ready.body) == (503, b"draining\n")
        version = app.get("/version")
        assert version.status == 200
        assert version.headers.get("connection") == "close"
        assert "app_draining 1" in app.get("/metrics").body.decode()
        assert app.proc.wait(10) == 0
        assert time.monotonic() - sent >= 1.4
        out = app.proc.stdout.read() if app.proc.stdout else ""
    assert "SIGTERM" in out and "stopped" in out


def test_smoke_suite_against_the_app() -> None:
    with running_app() as app:
        url = f"http://127.0.0.1:{app.port}"
        cmd = [sys.executable, "-m", "sampleapp.smoke", "--url", url, "--skip-items"]
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
        good = subprocess.run(
            [*cmd, "--expect-version", "v7"], env=env, capture_output=True, text=True
        )
        assert good.returncode == 0, good.stdout
        assert good.stdout.count("PASS ") == 3
        wrong = subprocess.run(
            [*cmd, "--expect-version", "v8"], env=env, capture_output=True, text=True
        )
        assert wrong.returncode == 1
        assert "FAIL version" in wrong.stdout
        forced = subprocess.run(cmd, env={**env, "FAIL_SMOKE": "1"}, capture_output=True, text=True)
        assert forced.returncode == 1
        assert "FAIL forced" in forced.stdout
        items = subprocess.run(cmd[:-1], env=env, capture_output=True, text=True)
        assert items.returncode == 1
        assert "FAIL items" in items.stdout


def test_smoke_suite_reports_an_unreachable_app() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "sampleapp.smoke", "--url", url, "--timeout", "1"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 1
    assert out.stdout.count("FAIL ") == 4
    assert "request failed" in out.stdout


# --- migrations -------------------------------------------------------------------------


def alembic(*args: str, env: dict[str, str] | None = None, section: str = "alembic") -> str:
    pytest.importorskip("alembic", reason="alembic is not installed (pip install alembic)")
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "-n", section, *args],
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_offline_sql_of_the_expand_step() -> None:
    sql = alembic("upgrade", "0001:0002", "--sql")
    assert "ALTER TABLE items ADD COLUMN description TEXT" in sql
    assert "DROP" not in sql


def test_unsafe_revision_only_when_asked_for() -> None:
    assert alembic("heads").split()[0] == "0002"
    assert alembic("heads", section="unsafe").split()[0] == "0003"
    sql = alembic("upgrade", "0002:head", "--sql", env={"BASCULE_UNSAFE_MIGRATIONS": "1"})
    assert "ALTER TABLE items DROP COLUMN name" in sql
    assert alembic("upgrade", "0001:head", "--sql").count("Running upgrade") == 1


INITDB_OPTIONS = ("-A", "trust", "-U", "bascule", "--no-sync", "-E", "UTF8", "--no-locale")


def postgres_bin() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL on 127.0.0.1 in a temporary directory, stopped afterwards."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)"
    )
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    run_as: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="sampleapp-pg-"))
    if os.geteuid() == 0:
        # initdb refuses to run as root: use the postgres account the server package makes.
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres account to run PostgreSQL as")
        os.chown(tmp, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = tmp / "data", free_port()
    pid = None
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), *INITDB_OPTIONS],
            check=True,
            capture_output=True,
            timeout=60,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off"
        pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log")]
        subprocess.run(
            [*pg_ctl, "-o", options, "-w", "-t", "30", "start"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://bascule@127.0.0.1:{port}/postgres"
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        shutil.rmtree(tmp, ignore_errors=True)


def test_migrations_against_postgres_and_the_app_reading_them(postgres_url: str) -> None:
    env = {"DATABASE_URL": postgres_url}
    alembic("upgrade", "0001", env=env)
    with running_app(DATABASE_URL=postgres_url) as app:
        v1 = app.get("/api/items")
        assert v1.status == 200, v1.body
        rows = v1.json()
        assert isinstance(rows, list)
        assert [r["name"] for r in rows] == ["anvil", "bell", "crank"]
        assert set(rows[0]) == {"id", "name", "created_at"}

        alembic("upgrade", "head", env=env)
        assert alembic("current", env=env).split()[0] == "0002"
        v2 = app.get("/api/items").json()
        assert isinstance(v2, list) and v2[0]["description"] is None

        # The unsafe step breaks the running version at once: why it must not pass the lint.
        alembic("upgrade", "head", env={**env, "BASCULE_UNSAFE_MIGRATIONS": "1"})
        broken = app.get("/api/items")
        assert broken.status == 503
        assert "name" in str(broken.json())
        alembic("downgrade", "0002", env={**env, "BASCULE_UNSAFE_MIGRATIONS": "1"})
