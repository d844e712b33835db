"""A run's Prefect artifacts (its progress bar, report and analysis table) and its other
Prefect writes (the flow run's digest label), made from a thread of their own while the run
goes on.

Each write is an HTTP request to the Prefect API on a client of its own (40-90 ms each on a
busy machine, ten or more per deploy, measured with py-spy), and no later step needs its
answer. The writes keep their order, carry the run's context (so each is attached to the
flow run as before), and ``flush`` waits for them before the run ends. Their texts are
masked (``bascule.redact``) here, where they leave for Prefect: a report quotes app output.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from bascule.redact import redact, redact_data

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Writer:
    def __init__(self, log: Logger) -> None:
        self.log = log
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []
        self._progress: UUID | None = None

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bascule-artifacts")
        run = contextvars.copy_context().run  # the flow run's context: the artifact is its
        self._pending.append(self._pool.submit(run, fn, *args, **kwargs))

    def progress(self, percent: float, description: str) -> None:
        """The run's progress artifact: created by the first call, updated by the next."""
        self._submit(self._write_progress, percent, redact(description))

    def _write_progress(self, percent: float, description: str) -> None:
        if self._progress is None:
            # Called from sync code it returns the id; its annotation covers the async use too.
            self._progress = cast(UUID, create_progress_artifact(percent, description=description))
        else:
            update_progress_artifact(self._progress, percent, description=description)

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Another Prefect write no later step needs, in order with the artifacts."""
        self._submit(fn, *args)

    def markdown(self, key: str, markdown: str, description: str) -> None:
        self._submit(
            create_markdown_artifact,
            key=key,
            markdown=redact(markdown),
            description=redact(description),
        )

    def table(self, key: str, table: list[dict[str, Any]], description: str) -> None:
        self._submit(
            create_table_artifact,
            key=key,
            table=redact_data(table),
            description=redact(description),
        )

    def flush(self) -> None:
        """Waits for every write asked for so far. One that failed is logged, not raised: the
        run's record is its history in the cluster, which is written already."""
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.result()
            except Exception as exc:
                self.log.warning("a Prefect artifact of this run was not written: %s", exc)
        if self._pool is not None:  # its thread ends; a later write starts another
            self._pool.shutdown(wait=False)
            self._pool = None
