"""The code stays clean: ruff, mypy and the import contracts (lint-imports), as configured in
pyproject.toml, find nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def assert_clean(*args: str) -> None:
    proc = run(*args)
    assert proc.returncode == 0, (
        f"`{' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )


def test_ruff() -> None:
    assert_clean("ruff", "check", ".")
    assert_clean("ruff", "format", "--check", ".")


@pytest.mark.slow
def test_mypy() -> None:
    assert_clean("mypy")


def test_import_contracts() -> None:
    """The pure core imports no I/O library, tasks no flows (pyproject.toml's contracts)."""
    # The script's own directory is first on its path: the repository is added explicitly.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
