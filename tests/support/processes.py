"""Stopping a process a test or benchmark started: SIGTERM, then SIGKILL if it lingers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop(proc: subprocess.Popen[bytes], timeout: float = 20, group: bool = False) -> None:
    """Stops ``proc`` (by its pid; with ``group``, its process group, which is its pid when
    started with ``start_new_session``, so only our processes are reached)."""
    if proc.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
