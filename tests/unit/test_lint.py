"""The code stays clean: ruff, mypy and the import contracts (lint-imports), as configured in
pyproject.toml, find nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

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


def test_prefect_version_agrees_with_the_lower_bound() -> None:
    """prefect.yaml's prefect-version is the oldest Prefect that pyproject.toml allows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bound = next(
        m.group(1)
        for dep in project["dependencies"]
        if (m := re.fullmatch(r"prefect>=([\d.]+),<\d+", dep))
    )
    assert yaml.safe_load((ROOT / "prefect.yaml").read_text())["prefect-version"] == bound
