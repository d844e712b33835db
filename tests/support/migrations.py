"""Running ``bascule migrations`` in tests: an environment file whose migrations section
points at the sample app's or the fixture revisions, and the command in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_INI = REPO / "sampleapp" / "alembic.ini"
CASES_INI = REPO / "tests" / "migrations" / "alembic.ini"
URL_VARIABLE = "BASCULE_TEST_MIGRATIONS_URL"


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
    return subprocess.run(
        [sys.executable, "-m", "bascule.cli", "migrations", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO), **environ},
        timeout=120,
        check=False,
    )
