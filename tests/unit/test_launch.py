"""The flow-run process of Bascule's workers (flows/launch.py): started with ``python -P`` and
one of Bascule's entrypoints, it hands over to Prefect's engine; otherwise it starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bascule.flows.launch import LAUNCH
from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import Exit
from bascule.runpolicy import ENTRYPOINTS

REPO = Path(__file__).resolve().parents[2]


def launch(tmp_path: Path, *args: str, entrypoint: str) -> subprocess.CompletedProcess[str]:
    """The launcher in an empty directory (a checkout), with no flow run to load."""
    env = {**os.environ, ENTRYPOINT_ENV: entrypoint, "PYTHONPATH": str(REPO)}
    env.pop("PREFECT__FLOW_RUN_ID", None)
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_with_python_p_and_bascules_entrypoint_the_engine_starts(tmp_path: Path) -> None:
    done = launch(tmp_path, *LAUNCH, entrypoint=ENTRYPOINTS["deploy"])
    # The engine's own refusal: it got as far as looking for the run.
    assert done.returncode == 1 and "Invalid flow run id" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("args", "entrypoint", "said"),
    [
        (("-m", "bascule.flows.launch"), ENTRYPOINTS["deploy"], "start it with python -P"),
        (LAUNCH, "evil.py:deploy", "not one of Bascule's flows"),
    ],
)
def test_otherwise_it_starts_nothing(
    tmp_path: Path, args: tuple[str, ...], entrypoint: str, said: str
) -> None:
    done = launch(tmp_path, *args, entrypoint=entrypoint)
    assert done.returncode == Exit.USAGE and said in done.stderr, done.stderr[-2000:]
    assert "Invalid flow run id" not in done.stderr
