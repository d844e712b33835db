"""How an expected failure must read, wherever it is read: no traceback, and its reason on the
last line (the command's verdict, or the run's last log line)."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx


def assert_one_line(output: str, last: str) -> None:
    """``output`` shows no traceback and its last line holds ``last``."""
    assert "Traceback" not in output, output[-6000:]
    lines = output.rstrip("\n").splitlines()
    assert lines and last in lines[-1], lines[-6:]


def assert_verdict(res: subprocess.CompletedProcess[str], code: int, last: str) -> None:
    """A `bascule` command that ended as expected: exit ``code``, no traceback, and ``last``
    in the last line it printed (a failure's verdict goes to stderr, after all of stdout)."""
    assert res.returncode == code, res.stdout[-3000:] + res.stderr[-3000:]
    assert_one_line(res.stdout + res.stderr, last)


def run_logs(api: str, run_id: str, **client: Any) -> list[str]:
    """The messages of a flow run's log in the Prefect API, oldest first, as the UI shows
    them; ``client``: more arguments for httpx (e.g. ``auth``)."""
    found = httpx.post(
        f"{api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"},
        timeout=30,
        **client,
    )
    found.raise_for_status()
    return [str(entry["message"]) for entry in found.json()]
