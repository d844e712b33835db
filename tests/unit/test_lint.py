"""The code stays clean: ruff and mypy, as configured in pyproject.toml, find nothing."""

from __future__ import annotations

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
