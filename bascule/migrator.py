"""Runs Alembic upgrades the same way wherever they run: in the flow's process (``process``
runner) or in a Kubernetes Job from the app's own image (``job`` runner, which mounts this
very file and runs it with the image's python3).

So this module needs only the standard library, Alembic and SQLAlchemy, and works with
Debian's Alembic 1.8 / SQLAlchemy 1.4 as well as with the project's newer ones. It imports
nothing else of Bascule.

One run: a session-level advisory lock on a connection of its own (bounded wait; the key
is derived from the database and the Alembic version table, so two runs on one database
never both migrate), ``lock_timeout`` and ``statement_timeout`` on the migration connection
(handed to env.py in ``config.attributes["connection"]``, Alembic's cookbook pattern, and
set in PGOPTIONS for an env.py that opens its own), an upgrade to one target revision,
never a downgrade, one revision at a time.

The lock_timeout is short (LOCK_TIMEOUT_MS): a statement waiting for a lock makes every
query of the running version on that table queue behind it, so it gives up soon. The
revision's transaction is then rolled back, which lets go of every lock it took, and the
whole revision is tried again on a new connection after a pause that doubles, with jitter,
until ``lock_retry_seconds`` is spent. A revision that committed part of its work before the
lock timeout (an autocommit block) is not tried again: that part would run twice.

The result says the revision before and after, which revisions waited for locks (tries,
seconds, who held the lock) and, on failure, the failing revision, its statement and the
database's error. No text it returns carries the database URL or its password.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import unquote

RESULT_MARKER = "BASCULE-MIGRATION-RESULT "  # the line of the Job's log that carries the result
LOCK_POLL_SECONDS = 0.2
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout
QUERY_CANCELED = "57014"  # SQLSTATE of a statement_timeout
# The defaults of the migrations config (bascule.config.migrations reads them here, the one place).
LOCK_TIMEOUT_MS = 300  # the longest a running version's query queues behind a migration
LOCK_RETRY_SECONDS = 60.0  # how long one revision keeps trying for its locks
BACKOFF_FIRST_SECONDS = 0.2  # the pause after a revision's first lock timeout; it doubles
BACKOFF_MOST_SECONDS = 5.0


@dataclass(frozen=True)
class Settings:
    alembic_ini: str
    target: str  # a revision id, or "current" to only read where the database is
    lock_timeout_ms: int
    statement_timeout_ms: int
    advisory_lock_wait_seconds: float
    ini_section: str = "alembic"
    script_location: str | None = None  # overrides the ini's
    version_table: str = "alembic_version"
    version_table_schema: str | None = None
    label: str = ""  # who runs (a release id), shown to a second run waiting for the lock
    url_variable: str = "DATABASE_URL"  # where the app's env.py reads the URL
    lock_retry_seconds: float = LOCK_RETRY_SECONDS

    def argv(self) -> list[str]:
        """The command line that gives ``main`` these settings (see ``parse_args``)."""
        return [f"{_option(k)}={v}" for k, v in asdict(self).items() if v is not None]


@dataclass(frozen=True)
class LockWait:
    """A revision that met a lock timeout: how many tries it took, the seconds before the
    try that succeeded (or until the last one failed) and who held the lock the last time."""

    revision: str
    tries: int
    seconds: float
    held_by: str

    def describe(self) -> str:
        return (
            f"revision {self.revision} waited {self.seconds:.1f} s for its locks over "
            f"{self.tries} tries ({self.held_by})"
        )


@dataclass(frozen=True)
class Result:
    ok: bool
    target: str
    before: str | None = None
    after: str | None = None
    applied: list[str] = field(default_factory=list)
    kind: str = ""  # on failure: advisory-lock, lock-timeout, statement-timeout, error
    failed_revision: str | None = None
    statement: str = ""
    error: str = ""
    seconds: float = 0.0
    lock_wait_seconds: float = 0.0  # for the advisory lock
    lock_waits: list[LockWait] = field(default_factory=list)  # for the tables' locks

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Result:
        known = {k: v for k, v in data.items() if k in Result.__dataclass_fields__}
        known["lock_waits"] = [LockWait(**w) for w in known.get("lock_waits", [])]
        return Result(**known)

    def lock_summary(self) -> str:
        """The revisions that waited for locks, for the report; "" when none did."""
        return "; ".join(w.describe() for w in self.lock_waits)


class Masker:
    """Removes the database URL and its password from any text before it leaves."""

    def __init__(self, url: str) -> None:
        secrets = {url}
        password = re.match(r"^[^:/]+://[^:/@]*:([^@]*)@", url)
        if password and password.group(1):
            secrets |= {password.group(1), unquote(password.group(1))}
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def lock_key(database: str, schema: str, version_table: str) -> int:
    """The advisory lock's key (a signed 64-bit integer) for one database's version table."""
    digest = hashlib.sha256(f"bascule-migrations:{database}:{schema}.{version_table}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def backoff_seconds(failed_tries: int, jitter: float) -> float:
    """The pause after a revision's ``failed_tries``-th lock timeout in a row: doubling from
    BACKOFF_FIRST_SECONDS up to BACKOFF_MOST_SECONDS, less up to half of it by ``jitter``
    (random, 0 <= jitter < 1) so that runs blocked by one session do not come back in step."""
    ceiling = BACKOFF_FIRST_SECONDS * 2.0 ** min(max(failed_tries - 1, 0), 32)
    return min(ceiling, BACKOFF_MOST_SECONDS) * (1 - jitter / 2)


def pause_before_retry(
    failed_tries: int, elapsed: float, budget: float, lock_timeout: float, jitter: float
) -> float | None:
    """How long to wait before trying a revision again, ``elapsed`` seconds after its first
    try began; None when a try (``lock_timeout`` long) would no longer end within ``budget``.
    The last pause is cut short so that the last try still fits."""
    room = budget - elapsed - lock_timeout
    if room <= 0:
        return None
    return min(backoff_seconds(failed_tries, jitter), room)


def _timeouts(settings: Settings) -> str:
    """libpq ``options``: the timeouts every migration connection starts with."""
    return (
        f"-c lock_timeout={settings.lock_timeout_ms}ms "
        f"-c statement_timeout={settings.statement_timeout_ms}ms"
    )


def _engine(url: str, settings: Settings, timeouts: bool) -> Any:
    from sqlalchemy import create_engine, pool
    from sqlalchemy.engine import make_url

    # As tasks/migration_plan.engine_url, which this file cannot import inside the Job.
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "postgresql":  # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg2")
    args: dict[str, Any] = {
        "connect_timeout": 10,
        "application_name": f"bascule-migrations {settings.label}".strip()[:63],
    }
    if timeouts:
        args["options"] = _timeouts(settings)
    return create_engine(parsed, poolclass=pool.NullPool, connect_args=args)


def _scalar(conn: Any, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    return conn.execute(text(sql), params).scalar()


class LockNotAcquired(Exception):
    pass


@contextmanager
def advisory_lock(conn: Any, settings: Settings) -> Iterator[float]:
    """Holds the run's session-level advisory lock; yields the seconds waited for it."""
    schema = settings.version_table_schema or _scalar(conn, "SELECT current_schema()")
    database = _scalar(conn, "SELECT current_database()")
    key = lock_key(database, schema, settings.version_table)
    started = time.monotonic()
    deadline = started + settings.advisory_lock_wait_seconds
    while not _scalar(conn, "SELECT pg_try_advisory_lock(:k)", k=key):
        if time.monotonic() >= deadline:
            raise LockNotAcquired(
                f"another migration run holds the advisory lock of {database} "
                f"({schema}.{settings.version_table}): {_lock_holder(conn, key)}; waited "
                f"{settings.advisory_lock_wait_seconds:g} s (advisory_lock_wait_seconds) — "
                "nothing was migrated; run again when it is done"
            )
        time.sleep(LOCK_POLL_SECONDS)
    try:
        yield time.monotonic() - started
    finally:
        _scalar(conn, "SELECT pg_advisory_unlock(:k)", k=key)


def _lock_holder(conn: Any, key: int) -> str:
    from sqlalchemy import text

    # A bigint key is stored as two oids: classid (high half) and objid (low half).
    row = conn.execute(
        text(
            "SELECT a.pid, a.application_name FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
            " AND l.granted AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "its holder has just let go"
    return f"pid {row[0]} ({row[1] or 'no application_name'})"


def _blockers(conn: Any, statement: str) -> str:
    """Who holds locks on the tables ``statement`` names, for a lock timeout's message."""
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "SELECT l.relation::regclass::text, l.mode, a.pid, a.application_name, a.state,"
            " a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    ).fetchall()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", statement.lower()))
    named = [r for r in rows if r[0].split(".")[-1].strip('"').lower() in words]
    if not named:
        return "the lock was held by another session (it has let go since)"
    return "; ".join(
        f"{rel} is locked ({mode}) by pid {pid} ({app or 'no application_name'}, {st}: "
        f"{(q or '').strip()[:120]})"
        for rel, mode, pid, app, st, q in named
    )


def _alembic_config(settings: Settings) -> Any:
    from alembic.config import Config

    config = Config(settings.alembic_ini, ini_section=settings.ini_section)
    # An env.py that honours it leaves the flow's logging alone (Alembic's cookbook key).
    config.attributes["configure_logger"] = False
    if settings.script_location:
        config.set_main_option("script_location", settings.script_location)
    return config


def _current(conn: Any, settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    opts = {"version_table": settings.version_table}
    if settings.version_table_schema:
        opts["version_table_schema"] = settings.version_table_schema
    heads = MigrationContext.configure(conn, opts=opts).get_current_heads()
    return ",".join(heads) if heads else None


def _path(script: Any, upper: str, lower: str | None) -> list[str]:
    """The revisions an upgrade from ``lower`` to ``upper`` applies, oldest first."""
    return [r.revision for r in script.iterate_revisions(upper, lower or "base")][::-1]


def run(url: str, settings: Settings) -> Result:
    """Upgrades the database to ``settings.target``, or with target "current" only reads
    where it is; never raises for a database error, the result says it."""
    mask = Masker(url)
    started = time.monotonic()
    lock_engine = _engine(url, settings, timeouts=False)
    target, before = settings.target, None
    try:
        with lock_engine.connect() as raw:
            lock_conn = raw.execution_options(isolation_level="AUTOCOMMIT")
            before = _current(lock_conn, settings)
            if target == "current":
                return Result(True, target, before, before, seconds=time.monotonic() - started)
            with advisory_lock(lock_conn, settings) as waited:
                before = _current(lock_conn, settings)  # another run may have moved it
                result = _upgrade(url, settings, lock_conn, before, mask)
                return replace(result, seconds=time.monotonic() - started, lock_wait_seconds=waited)
    except LockNotAcquired as exc:
        return Result(False, target, before, before, kind="advisory-lock", error=mask(str(exc)))
    except Exception as exc:  # connecting, reading the version table: no revision ran
        return Result(False, target, before, before, kind="error", error=_describe(exc, mask))
    finally:
        lock_engine.dispose()


def _upgrade(
    url: str, settings: Settings, lock_conn: Any, before: str | None, mask: Masker
) -> Result:
    from alembic.script import ScriptDirectory

    config = _alembic_config(settings)
    script = ScriptDirectory.from_config(config)
    target = settings.target
    if before is not None and target in _path(script, before, None):
        return Result(True, target, before, before)  # there already: nothing to do, never down
    pending = _path(script, target, before)
    # An env.py that opens its own connection (older images) finds the URL where it looks
    # and gets the timeouts too; both only for the upgrade's duration.
    overrides = {"PGOPTIONS": _timeouts(settings), settings.url_variable: url}
    waits: list[LockWait] = []
    with _environ(overrides), _CommitWatch() as commits:
        engine = _engine(url, settings, timeouts=True)
        try:
            for revision in pending:
                tried = _apply(revision, config, engine, settings, lock_conn, commits, mask)
                waits += [tried.wait] if tried.wait else []
                if tried.error is None:
                    continue
                after = _current(lock_conn, settings)
                remaining = _path(script, target, after)
                kind, error = _failure(tried, settings, mask)
                return Result(
                    False,
                    target,
                    before,
                    after,
                    applied=[r for r in pending if r not in remaining],
                    kind=kind,
                    failed_revision=remaining[0] if remaining else None,
                    statement=_statement(tried.error, mask),
                    error=error,
                    lock_waits=waits,
                )
        finally:
            engine.dispose()
    return Result(True, target, before, _current(lock_conn, settings), pending, lock_waits=waits)


@contextmanager
def _environ(overrides: dict[str, str]) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class _Tried:
    """How one revision went: its error (None: applied), its wait for locks, if it had one,
    and whether it committed part of its work before it failed."""

    error: Exception | None
    wait: LockWait | None
    partly_committed: bool = False


def _apply(
    revision: str,
    config: Any,
    engine: Any,
    settings: Settings,
    lock_conn: Any,
    commits: _CommitWatch,
    mask: Masker,
) -> _Tried:
    """Upgrades to ``revision`` (the next one) in a transaction of its own, tried again after
    each lock timeout while ``settings.lock_retry_seconds`` allows."""
    from alembic import command

    started = time.monotonic()
    tries, held_by = 0, ""
    while True:
        tries += 1
        try_started, committed = time.monotonic(), commits.count
        try:
            with engine.connect() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
        except Exception as exc:
            if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
                return _Tried(exc, _waited(revision, tries, try_started - started, held_by))
            held_by = mask(_blockers(lock_conn, _statement(exc, mask)))
            wait = LockWait(revision, tries, time.monotonic() - started, held_by)
            if commits.count > committed:
                return _Tried(exc, wait, partly_committed=True)
            pause = pause_before_retry(
                tries,
                time.monotonic() - started,
                settings.lock_retry_seconds,
                settings.lock_timeout_ms / 1000,
                random.random(),
            )
            if pause is None:
                return _Tried(exc, wait)
            time.sleep(pause)
            continue
        return _Tried(None, _waited(revision, tries, try_started - started, held_by))


def _waited(revision: str, tries: int, seconds: float, held_by: str) -> LockWait | None:
    """The wait of a revision whose last try did not end in a lock timeout, if it had one."""
    return LockWait(revision, tries, seconds, held_by) if held_by else None


def _failure(tried: _Tried, settings: Settings, mask: Masker) -> tuple[str, str]:
    """The kind of a failed revision's error and what to say about it."""
    assert tried.error is not None
    kind = {LOCK_NOT_AVAILABLE: "lock-timeout", QUERY_CANCELED: "statement-timeout"}.get(
        _sqlstate(tried.error) or "", "error"
    )
    error = _describe(tried.error, mask)
    wait = tried.wait
    if kind != "lock-timeout" or wait is None:
        return kind, error
    error += f" after lock_timeout {settings.lock_timeout_ms} ms: {wait.held_by}; "
    if tried.partly_committed:
        return kind, error + (
            "not tried again: the revision had committed part of its work (an autocommit "
            "block), which a second try would run again — give the statement that takes the "
            "lock a revision of its own"
        )
    return kind, error + (
        f"{wait.tries} tries over {wait.seconds:.1f} s "
        f"(lock_retry_seconds: {settings.lock_retry_seconds:g})"
    )


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return str(code) if code else None


def _statement(exc: BaseException, mask: Masker) -> str:
    return mask(str(getattr(exc, "statement", "") or "").strip())


class _CommitWatch:
    """Counts, while open, the commits of this thread's SQLAlchemy connections (env.py's own
    included) that can happen inside a revision: an autocommit block (Alembic switches the
    connection to AUTOCOMMIT) or a COMMIT statement. A revision that made one before its lock
    timeout has work in the database that a second try would run again."""

    _COMMIT = re.compile(r"\s*(COMMIT|END)(\s+(WORK|TRANSACTION))?\s*;?\s*", re.IGNORECASE)

    def __init__(self) -> None:
        self.count = 0
        self._thread = threading.get_ident()
        # Held once: event.remove needs the very callables that were listened with.
        self._listeners: dict[str, Callable[..., None]] = {
            "set_connection_execution_options": self._options,
            "before_cursor_execute": self._cursor,
        }

    def _options(self, conn: Any, opts: dict[str, Any]) -> None:
        if opts.get("isolation_level") == "AUTOCOMMIT":
            self._seen()

    def _cursor(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if self._COMMIT.fullmatch(statement):
            self._seen()

    def _seen(self) -> None:
        if threading.get_ident() == self._thread:
            self.count += 1

    def __enter__(self) -> _CommitWatch:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, listener in self._listeners.items():
            event.listen(Engine, name, listener)
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, listener in self._listeners.items():
            event.remove(Engine, name, listener)


def _describe(exc: BaseException, mask: Masker) -> str:
    """The database's own words (its first line), else the exception's, masked."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return mask(f"{type(orig or exc).__name__}: {first}")


def parse_args(argv: list[str] | None = None) -> Settings:
    """The settings from the command line ``Settings.argv`` writes (the Job's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for item in fields(Settings):
        # The annotations are strings here (postponed): "int", "float", "str | None", ...
        kind = {"int": int, "float": float}.get(str(item.type), str)
        required = item.default is MISSING
        parser.add_argument(_option(item.name), dest=item.name, type=kind, required=required)
    args = parser.parse_args(argv)
    given = {name: value for name, value in vars(args).items() if value is not None}
    return Settings(**given)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    """The Job's entry point: the URL comes from the environment, the result is one JSON
    line on stdout after RESULT_MARKER; exit 0 when it succeeded, 1 when not."""
    settings = parse_args(argv)
    url = os.environ.get(settings.url_variable, "")
    if not url:
        result = Result(
            False, settings.target, kind="error", error=f"{settings.url_variable} is not set"
        )
    else:
        result = run(url, settings)
    print(RESULT_MARKER + json.dumps(result.to_json()), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
