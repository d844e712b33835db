"""Alembic environment of the sample app's schema.

The database comes from DATABASE_URL; offline (`--sql`) runs need none, they only render
PostgreSQL SQL. A connection passed in ``config.attributes["connection"]`` (Alembic's
cookbook pattern; Bascule's runner passes one with its timeouts set) is used instead. Each
revision runs in its own transaction, so a failed one leaves the schema at the last revision
that succeeded. BASCULE_UNSAFE_MIGRATIONS=1 adds the deliberately unsafe
revisions in unsafe/ (see alembic.ini).
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, make_url

UNSAFE_DIR = Path(__file__).resolve().parent / "unsafe"
OFFLINE_URL = "postgresql+psycopg2://"  # offline SQL needs the dialect, not a server

config = context.config
# A program that runs Alembic through its API (Bascule) keeps its own logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def include_unsafe_revisions() -> None:
    """Adds unsafe/ to the version locations, before Alembic first reads the revisions."""
    script = context.script
    if str(UNSAFE_DIR) in map(str, script.version_locations):
        return
    if "_version_locations" in vars(script):
        raise RuntimeError("BASCULE_UNSAFE_MIGRATIONS=1 came too late: revisions already read")
    script.version_locations = [*script.version_locations, str(UNSAFE_DIR)]


def database_url(raw: str) -> URL:
    """The libpq-style DATABASE_URL the app uses, with the driver SQLAlchemy should load.

    SQLAlchemy 2.1 takes a bare postgresql:// to mean psycopg 3; the app and this project use
    psycopg2, and libpq also accepts postgres://, which SQLAlchemy does not.
    """
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    url = make_url(raw)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    return url


def run_offline() -> None:
    context.configure(
        url=database_url(os.environ.get("DATABASE_URL") or OFFLINE_URL),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    # A runner that holds locks and sets timeouts (Bascule's) hands over its connection.
    given = config.attributes.get("connection")
    if given is not None:
        context.configure(connection=given, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "sampleapp migrations: set DATABASE_URL (postgresql://user:pass@host:5432/db),"
            " or pass --sql to print the SQL without a database"
        )
    engine = create_engine(
        database_url(url), poolclass=pool.NullPool, connect_args={"connect_timeout": 10}
    )
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if os.environ.get("BASCULE_UNSAFE_MIGRATIONS", "").strip() == "1":
    include_unsafe_revisions()
if context.is_offline_mode():
    run_offline()
else:
    run_online()
