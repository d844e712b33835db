"""Processes a test or benchmark started: stopping one (SIGTERM, then SIGKILL if it lingers),
and what one uses, from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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


def usage(pid: int) -> tuple[int, float, int]:
    """Resident memory (kB), CPU seconds so far (user + system) and process group of ``pid``;
    OSError when it is gone."""
    # The fields after the command, which may hold spaces, in parentheses.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return rss_kb, cpu, int(fields[2])


def idle_footprint(seconds: float, **who: Callable[[], tuple[int, float]]) -> dict[str, str]:
    """Each of ``who``'s resident memory (MiB, at the end) and CPU used (% of one core) while
    nothing was asked of it for ``seconds``; ``who``: name → (rss kB, CPU seconds so far)."""
    before = {name: read()[1] for name, read in who.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began  # measured: the sleep may run long
    figures: dict[str, str] = {}
    for name, read in who.items():
        rss_kb, cpu = read()
        figures[f"{name}_idle_rss_mib"] = f"{rss_kb / 1024:.0f}"
        figures[f"{name}_idle_cpu_percent"] = f"{100 * (cpu - before[name]) / elapsed:.2f}"
    return figures
