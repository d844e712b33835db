"""Alembic revisions for tests: running ``bascule migrations`` on an environment file whose
migrations section points at the sample app's or the fixture revisions; revision trees of the
sample app's own revisions plus test ones in a temporary directory; a ``migrations:``
section for the pipeline's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from bascule import migrator
from tests.support import cliforks
from tests.support.postgres import Database

REPO = Path(__file__).resolve().parents[2]
SAMPLE_INI = REPO / "sampleapp" / "alembic.ini"
CASES_INI = REPO / "tests" / "migrations" / "alembic.ini"
URL_VARIABLE = "BASCULE_TEST_MIGRATIONS_URL"

JOB_INI = "/app/sampleapp/alembic.ini"  # the sample image's own revisions


def revision(rev: str, down: str, body: str, phase: str = "expand") -> tuple[str, str]:
    """A revision file: its name and text."""
    text = f'''"""Test revision {rev}."""

from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None
phase = "{phase}"


def upgrade() -> None:
{textwrap.indent(textwrap.dedent(body).strip(), "    ")}


def downgrade() -> None:
    raise NotImplementedError
'''
    return f"{rev}_test.py", text


def scripts(tmp: Path, *extra: tuple[str, str]) -> Path:
    """The sample app's alembic.ini and revisions, plus ``extra`` ones; the ini's path."""
    app = tmp / "app"
    shutil.copytree(REPO / "sampleapp" / "migrations", app / "migrations", ignore=ignore_cache)
    shutil.copy(REPO / "sampleapp" / "alembic.ini", app / "alembic.ini")
    for name, text in extra:
        (app / "migrations" / "versions" / name).write_text(text)
    return app / "alembic.ini"


def ignore_cache(_: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def legacy_chain(tmp: Path) -> Path:
    """0001 → 0001a (expand: adds ``legacy``, which no version reads) → 0002 (the sample's
    expand: ``description``) → 0003 (contract: drops ``legacy``); the ini's path."""
    legacy = revision(
        "0001a",
        "0001",
        'import sqlalchemy as sa\nop.add_column("items", sa.Column("legacy", sa.Text()))',
    )
    drop = revision("0003", "0002", 'op.drop_column("items", "legacy")', phase="contract")
    ini = scripts(tmp, legacy, drop)
    (ini.parent / "migrations" / "versions" / "0002_add_description.py").write_text(
        (REPO / "sampleapp/migrations/versions/0002_add_description.py")
        .read_text()
        .replace('down_revision = "0001"', 'down_revision = "0001a"')
    )
    return ini


LOCK_RETRY_SECONDS = 3  # a test's revision tries for its locks this long, not a minute


def section(ini: Path, url_variable: str, runner: str = "process") -> dict[str, Any]:
    """A ``migrations:`` section with short timeouts; the URL from ``url_variable``."""
    return {
        "alembic_ini": str(ini),
        "database_url": {"env": url_variable},
        "runner": runner,
        "lock_retry_seconds": LOCK_RETRY_SECONDS,
        "statement_timeout_seconds": 20,
        "advisory_lock_wait_seconds": 3,
        "job": {"alembic_ini": JOB_INI, "timeout_seconds": 60},
    }


def upgrade_directly(db: Database, ini: Path, target: str) -> None:
    """Puts the database at ``target`` as an earlier release would have."""
    result = migrator.run(db.url(), migrator.Settings(str(ini), target, 5000, 60000, 5))
    assert result.ok, result


def write_env(directory: Path, ini: Path, section: str = "alembic") -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "dev.yaml").write_text(
        "app: sample-app\nenvironment: dev\nnamespace: bascule-dev\nmigrations:\n"
        f"  alembic_ini: {ini}\n  ini_section: {section}\n"
        f"  database_url: {{env: {URL_VARIABLE}}}\n"
    )
    return directory


def bascule(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != URL_VARIABLE}
    return cliforks.run(
        ["migrations", *args],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO), **environ},
        timeout=120,
    )
