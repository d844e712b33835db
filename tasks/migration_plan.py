"""The I/O of the migration plan: Alembic's script directory, the database's current revision,
the SQL of pending revisions from Alembic's offline mode, and squawk's findings on it.

No Prefect import, so that the CLI stays quick; the flow wraps these in its tasks. The database
URL carries a password: it is passed around as a value, and no message here contains it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from bascule.config import MigrationsConfig
from bascule.config_files import display_path
from bascule.errors import OperationFailed, Unreachable, UsageError
from bascule.migrations import (
    MigrationPlan,
    Revision,
    make_plan,
    parse_phase,
    split_offline_sql,
    split_phases,
    squawk_findings,
    squawk_input,
)
from bascule.redact import clip
from bascule.tasks.secretref import resolve

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import URL

URL_WHAT = "migrations.database_url"
CONNECT_TIMEOUT_SECONDS = 10


def engine_url(raw: str) -> URL:
    """A libpq-style URL (``postgres://``, ``postgresql://``) with the driver SQLAlchemy should
    load: psycopg2, which bare ``postgresql://`` no longer means from SQLAlchemy 2.1 on."""
    from sqlalchemy.engine import make_url

    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    try:
        url = make_url(raw)
    except Exception:  # its message would quote the URL, password and all
        raise UsageError(
            f"{URL_WHAT}: the value is not a database URL — write "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if url.get_backend_name() != "postgresql":
        raise UsageError(
            f"{URL_WHAT}: a {url.get_backend_name()} URL — Bascule's migrations step and its "
            "lint are for PostgreSQL (postgresql://...)"
        )
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def describe_url(url: URL) -> str:
    """Where a URL points, for messages: host, port and database, never the password."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def database_url(cfg: MigrationsConfig) -> str:
    """The database URL from the environment's secret; UsageError if it is not there."""
    return resolve(cfg.database_url, URL_WHAT)


def alembic_config(cfg: MigrationsConfig, output: TextIO | None = None) -> Config:
    """Alembic's configuration for ``cfg``; ``output`` receives offline SQL."""
    from alembic.config import Config

    config = Config(str(cfg.alembic_ini), ini_section=cfg.ini_section, output_buffer=output)
    config.attributes["configure_logger"] = False  # env.py's logging would print INFO lines
    if cfg.script_location is not None:
        config.set_main_option("script_location", str(cfg.script_location))
    if not config.get_main_option("script_location"):
        raise UsageError(
            f"{display_path(cfg.alembic_ini)} has no section [{cfg.ini_section}] with a "
            "script_location — fix migrations.ini_section or set migrations.script_location"
        )
    return config


def script_chain(cfg: MigrationsConfig) -> tuple[Revision, ...]:
    """The revisions from base to the single head, each with its phase, without SQL.

    UsageError when the script directory cannot be read, a ``phase`` is wrong, or there is more
    than one head (Alembic would not know which to upgrade to)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        script = ScriptDirectory.from_config(alembic_config(cfg))
        heads = script.get_heads()
        scripts = list(script.walk_revisions())
    except CommandError as exc:
        raise UsageError(f"migrations: Alembic cannot read the script directory: {exc}") from None
    if len(heads) > 1:
        raise UsageError(
            f"migrations: the script directory has {len(heads)} heads ({', '.join(sorted(heads))})"
            " — join them with `alembic merge heads` so there is one revision to upgrade to"
        )
    chain = []
    for item in reversed(scripts):
        down = item.down_revision
        path = display_path(Path(item.path))
        chain.append(
            Revision(
                id=item.revision,
                down_revision=",".join(down) if isinstance(down, tuple | list) else down,
                phase=parse_phase(getattr(item.module, "phase", None), path),
                path=path,
                doc=(item.doc or "").strip().splitlines()[0] if item.doc else "",
            )
        )
    return tuple(chain)


def read_current(cfg: MigrationsConfig, url: str) -> str | None:
    """The revision the database is at (None: none yet). Unreachable if it does not answer."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, exc, pool

    target = engine_url(url)
    engine = create_engine(
        target,
        poolclass=pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": cfg.version_table}
            )
            heads = context.get_current_heads()
    except exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise Unreachable(
            f"migrations: the database at {describe_url(target)} did not answer: {reason}"
        ) from None
    finally:
        engine.dispose()
    if len(heads) > 1:
        raise UsageError(
            f"migrations: the database's {cfg.version_table} holds {len(heads)} revisions "
            f"({', '.join(heads)}) — merge the branches in Alembic first"
        )
    return heads[0] if heads else None


def offline_sql(cfg: MigrationsConfig, start: str | None, head: str) -> dict[str, tuple[str, ...]]:
    """Each revision's statements from ``start`` (None: base) to ``head``, by Alembic's offline
    mode: no database is needed."""
    from alembic import command
    from alembic.util import CommandError

    buffer = io.StringIO()
    try:
        command.upgrade(alembic_config(cfg, buffer), f"{start}:{head}" if start else head, sql=True)
    except CommandError as exc:
        raise UsageError(f"migrations: Alembic could not render the SQL: {exc}") from None
    return split_offline_sql(buffer.getvalue(), cfg.version_table)


def _squawk() -> str:
    beside = Path(sys.executable).parent / "squawk"  # the squawk-cli package's binary
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if found is None:
        raise OperationFailed("squawk is not installed — pip install squawk-cli")
    return found


def run_squawk(revision: Revision, cfg: MigrationsConfig) -> list[dict[str, Any]]:
    """squawk's JSON findings on ``revision``'s SQL, the runner's settings first."""
    sql, _ = squawk_input(revision, cfg.session_settings())
    argv = [_squawk(), "--reporter", "json", "--stdin-filepath", f"{revision.id}.sql"]
    argv += [f"--exclude={rule}" for rule in cfg.lint.squawk_exclude]
    done = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=60, check=False)
    try:
        reports = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise OperationFailed(
            f"squawk failed on revision {revision.id} (exit {done.returncode}): "
            f"{clip(done.stderr.strip(), 500)}"
        ) from None
    return list(reports)


def build_plan(
    cfg: MigrationsConfig,
    *,
    start: str | None = None,
    database: Literal["require", "try", "no"] = "require",
    url: str | None = None,
) -> MigrationPlan:
    """The migration plan of an environment.

    ``start``: the revision to plan from (``base`` for an empty database), instead of asking
    the database. Otherwise ``database`` says whether the current revision must be read
    (``require``: errors propagate), may be (``try``: if it cannot, the plan says why and
    shows every revision as pending) or is not (``no``). ``url``: the database URL, if the
    caller has it already.
    """
    chain = script_chain(cfg)
    current: str | None = None
    known = True
    if start is not None:
        current, source = (None if start == "base" else start), "given with --from"
    elif database == "no":
        known, source = False, "the database was not asked"
    else:
        try:
            current = read_current(cfg, url or database_url(cfg))
            source = "read from the database"
        except (UsageError, Unreachable) as exc:
            if database == "require":
                raise
            known, source = False, str(exc).removeprefix("migrations: ")
    pending_from = current if known else None
    split_phases(chain, pending_from)  # a revision the scripts do not have: say so first
    if chain:
        sql = offline_sql(cfg, pending_from, chain[-1].id)
        ids = [r.id for r in chain]
        first = ids.index(pending_from) + 1 if pending_from in ids else 0
        chain = chain[:first] + tuple(replace(r, sql=sql.get(r.id, ())) for r in chain[first:])
    else:
        first = 0
    squawk = [
        finding
        for revision in chain[first:]
        for finding in squawk_findings(
            revision,
            squawk_input(revision, cfg.session_settings())[1],
            run_squawk(revision, cfg),
            cfg.lint.squawk_advisory,
        )
    ]
    return make_plan(
        chain,
        pending_from,
        current_known=known,
        current_source=source,
        settings=cfg.session_settings(),
        lock_timeout_ms=cfg.lock_timeout_ms,
        squawk=squawk,
    )
