"""The migration plan against the real PostgreSQL of the local cluster: the current revision is
read from the database (Alembic's version table), and neither a plan nor an error shows the
database URL's password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bascule.config_files import load_environment
from bascule.errors import Unreachable
from bascule.tasks.migration_plan import build_plan, read_current
from tests.support.migrations import REPO, SAMPLE_INI, URL_VARIABLE, bascule, write_env

pytestmark = pytest.mark.cluster


def alembic_upgrade(url: str, target: str) -> None:
    """The sample app's migrations run the way `make demo` runs them: Alembic's own command."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(SAMPLE_INI), "upgrade", target],
        env={**os.environ, "DATABASE_URL": url},
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=120,
    )


def test_the_plan_starts_at_the_revision_the_database_is_at(
    pg_database: str, tmp_path: Path
) -> None:
    password = urlsplit(pg_database).password
    assert password
    deployments = write_env(tmp_path / "d", SAMPLE_INI)
    cfg = load_environment(deployments / "dev.yaml").migrations
    assert cfg is not None
    assert read_current(cfg, pg_database) is None  # an empty database: base

    alembic_upgrade(pg_database, "0001")
    done = bascule("plan", "dev", "--dir", str(deployments), **{URL_VARIABLE: pg_database})
    assert done.returncode == 0, done.stderr
    assert "- Current revision: 0001 — read from the database" in done.stdout
    assert "**0002** (expand)" in done.stdout and "**0001**" not in done.stdout
    assert password not in done.stdout + done.stderr

    alembic_upgrade(pg_database, "0002")
    done = bascule("lint", "dev", "--dir", str(deployments), **{URL_VARIABLE: pg_database})
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == (
        "migrations: expand none; contract none; 0 blocking findings"
    )


def test_a_database_that_refuses_is_unknown_to_the_cli_and_an_error_to_the_flow(
    pg_database: str, tmp_path: Path
) -> None:
    wrong = "not-the-password-" + os.urandom(4).hex()
    parts = urlsplit(pg_database)
    bad = pg_database.replace(f":{parts.password}@", f":{wrong}@")
    deployments = write_env(tmp_path / "d", SAMPLE_INI)
    done = bascule("plan", "dev", "--dir", str(deployments), **{URL_VARIABLE: bad})
    assert done.returncode == 0, done.stderr
    database = parts.path.lstrip("/")
    assert f"- Current revision: unknown (the database at 127.0.0.1:{parts.port}/{database} " in (
        done.stdout
    )
    assert "password authentication failed" in done.stdout
    assert wrong not in done.stdout + done.stderr

    cfg = load_environment(deployments / "dev.yaml").migrations
    assert cfg is not None
    with pytest.raises(Unreachable) as caught:
        build_plan(cfg, url=bad)  # the flow's way: the current revision is required
    assert wrong not in str(caught.value) and database in str(caught.value)
