"""Many apps in one environment, for the test and the benchmark that deploy them at once: their
files (the environment's own app plus overlays), concurrent `bascule deploy` processes as
workers would run them, and the Prefect server's memory while they run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bascule.apps import overlay_file
from tests.support import deploys, processes
from tests.support.envs import write_envs

DEFAULT_APP = "sample-app"
# One replica, checks at their minimum, the shortest waits that still exercise every step;
# the old color outlives the switch long enough for kube-proxy to follow on a busy machine.
QUICK: dict[str, Any] = {
    "replicas": 1,
    "checks": {
        "health": [{"name": "ready", "path": "/readyz", "successes": 1}],
        "smoke": {"http": []},
    },
    "verification": {"window_seconds": 2, "interval_seconds": 1},
    "rollout": {"scale_down_delay_seconds": 4},
}


def app_names(count: int) -> list[str]:
    """The environment's own app, then ``count - 1`` more named apart from it."""
    return [DEFAULT_APP, *(f"api-{i:02d}" for i in range(1, count))]


def write_apps(directory: Path, namespace: str, kubeconfig: Path, count: int) -> Path:
    """staging.yaml (its own app) and an overlay apps/<app>/staging.yaml for each other app,
    all in ``namespace``: the same image and settings, as a platform's many small services."""
    cfg = write_envs(directory, namespace, kubeconfig, QUICK, ("staging",))
    write_overlays(cfg, "staging", count)
    return cfg


def write_overlays(cfg: Path, environment: str, count: int) -> None:
    """An overlay ``apps/<app>/<environment>.yaml`` in ``cfg`` for each app but the
    environment's own: the environment's settings as they are."""
    for app in app_names(count)[1:]:
        path = overlay_file(cfg, app, environment)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {app}: the environment's settings as they are\n")


@dataclass
class Deploy:
    app: str
    proc: Any
    log: Path
    started: float
    ended: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_deploys(
    api: str, cfg: Path, apps: list[str], image: str, logs: Path, *extra: str
) -> list[Deploy]:
    """One `bascule deploy staging --app A` process per app, all started at once."""
    logs.mkdir(parents=True, exist_ok=True)
    started = []
    for i, app in enumerate(apps):
        log = logs / f"{i:02d}-{app}.log"
        args = ("deploy", "--dir", str(cfg), "staging", "--app", app, "--image", image, *extra)
        started.append(Deploy(app, deploys.start(api, *args, log=log), log, time.monotonic()))
    return started


def wait_deploys(running: list[Deploy], timeout: float = 300) -> list[Deploy]:
    """Waits for every process, noting when each ended (polling, so a late one in the list
    does not make an early one look slow)."""
    deadline = time.monotonic() + timeout
    pending = list(running)
    while pending and time.monotonic() < deadline:
        for d in list(pending):
            if d.proc.poll() is not None:
                d.ended = time.monotonic()
                pending.remove(d)
        time.sleep(0.1)
    for d in pending:
        deploys.kill(d.proc)
        d.ended = time.monotonic()
    return running


def group_usage(pgid: int) -> tuple[int, float]:
    """Resident memory (kB) and CPU seconds so far of the processes in the process group
    ``pgid``, from /proc."""
    rss_kb, cpu = 0, 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            rss, used, group = processes.usage(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if group == pgid:
            rss_kb, cpu = rss_kb + rss, cpu + used
    return rss_kb, cpu


@dataclass
class GroupPeak:
    """A process group's peak resident memory and its CPU time, sampled in a thread."""

    pgid: int
    interval: float = 0.2
    peak_kb: int = 0
    cpu_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        first: float | None = None
        while not self._stop.is_set():
            rss_kb, cpu = group_usage(self.pgid)
            first = cpu if first is None else first
            self.peak_kb, self.cpu_seconds = max(self.peak_kb, rss_kb), cpu - first
            self._stop.wait(self.interval)


@contextmanager
def usage_of(pgid: int) -> Iterator[GroupPeak]:
    sampler = GroupPeak(pgid)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler._stop.set()
        thread.join(timeout=5)
