"""Work of a run in a thread of its own, in the run's context (its Prefect logger and
settings): what need not hold up the next step."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def in_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn`` run in a thread of its own, while the caller goes on."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bascule-background")
    future = pool.submit(contextvars.copy_context().run, fn, *args)
    pool.shutdown(wait=False)  # the thread ends with fn
    return future
