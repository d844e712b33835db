"""Trying a call again: the one loop and the one backoff of every retry in Bascule.

Each caller says which errors are worth another try (``on``) and, after each failed try,
how long to wait or to give up (``pause``): the rules differ (the Kubernetes API's outage
bound, the Prefect API's patience, a busy Prefect server's quick tries, a task's declared
retries, a webhook's delivery bound), the loop does not; ``retry_async`` is the same loop
for a coroutine (the worker's event stream, bascule/wake.py). Pure but for ``sleep``, which
tests replace.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

# The backoff of the Kubernetes API's retries and of webhook deliveries: 0.5, 1, 2, 4, 4 ... s.
FIRST_S, CAP_S = 0.5, 4.0


def backoff(attempt: int, first: float = FIRST_S, cap: float = CAP_S) -> float:
    """Seconds to wait after failed try ``attempt`` (1-based): ``first``, doubling, at most
    ``cap``."""
    return float(min(cap, first * 2.0 ** max(0, attempt - 1)))


def retry(
    call: Callable[[], T],
    pause: Callable[[E, int], float | None],
    on: type[E] | tuple[type[E], ...],
    *,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """``call()``, tried again while it raises one of ``on``: after failed try ``n``
    (1-based), ``pause(error, n)`` gives the seconds to wait before the next, or None to give
    up and raise the error as it is (``pause`` may raise an error of its own instead).
    ``sleep``: ``time.sleep`` unless given (looked up at each wait, so tests may patch it)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except on as exc:
            wait = pause(exc, attempt)
            if wait is None:
                raise
        (sleep or time.sleep)(wait)


async def retry_async(
    call: Callable[[], Awaitable[T]],
    pause: Callable[[E, int], float | None],
    on: type[E] | tuple[type[E], ...],
    *,
    sleep: Callable[[float], Awaitable[None]],
) -> T:
    """``retry`` for a coroutine: ``await call()``, tried again as ``retry`` tries, waiting
    with ``await sleep(seconds)`` (the caller's event loop's, e.g. ``anyio.sleep``)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except on as exc:
            wait = pause(exc, attempt)
            if wait is None:
                raise
        await sleep(wait)
