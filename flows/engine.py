"""Where a run's Prefect bookkeeping was cut, measured with py-spy on `make bench`.

Heartbeats: one adjustment to Prefect's flow engine, made when the flows are imported.

Every flow run sends heartbeats from a thread of its own (Prefect 3.9 on by default, every
180 s; ``bascule deploy`` every 30 s for the recover automation). That thread sleeps in
steps of one second, and a sync flow run, once finished, joins it: each run ends 0 to 1 s
(0.5 s on average) later than its work, measured with py-spy on `make bench`'s deploys and
rollbacks. Prefect's async engine already leaves the thread to stop by itself
(``join_on_exit=False``); so do our sync runs. The thread still sends no heartbeat after the
run ends: it looks at its stop flag after every second of sleep, before anything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from prefect import Task, flow_engine

P = ParamSpec("P")
R = TypeVar("R")

_UNJOINED = "bascule_unjoined"


def heartbeats_unjoined() -> None:
    """Makes sync flow runs end without waiting for their heartbeat thread; idempotent."""
    current = flow_engine._send_heartbeats
    if getattr(current, _UNJOINED, False):
        return
    unjoined = partial(current, join_on_exit=False)
    setattr(unjoined, _UNJOINED, True)
    flow_engine._send_heartbeats = unjoined


def untracked(task: Task[P, R]) -> Callable[P, R]:
    """``task``'s function with the retries it declares, run in the flow without a Prefect
    task run of its own. For the short steps of a run (a request or two each): creating and
    finishing a task run cost 20-60 ms each on a busy machine, more than most of these
    steps, and 1-2 s on a busy Prefect server. The run's step record (its history, event,
    progress and report) is what tells about them."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 0
        while True:
            try:
                return task.fn(*args, **kwargs)
            except Exception:
                if attempt >= task.retries:
                    raise
            time.sleep(_delay(task.retry_delay_seconds, attempt))
            attempt += 1

    return call


def _delay(delays: float | list[float] | None, attempt: int) -> float:
    """The wait before retry ``attempt + 1``, read as Prefect reads ``retry_delay_seconds``."""
    if isinstance(delays, list):
        return delays[min(attempt, len(delays) - 1)] if delays else 0.0
    return delays or 0.0
