"""A worker woken by Prefect's event stream as soon as a run is scheduled on its pool, not at
its next poll (PREFECT_WORKER_QUERY_SECONDS, 10 s by default).

Prefect's server emits ``prefect.flow-run.Scheduled`` when a run enters Scheduled: a run
created from a deployment (``bascule trigger``, the UI, an automation), with the run's
deployment, work queue and work pool among its related resources. The worker subscribes,
with Prefect's own client, to those of its pool, and on each calls its
``get_and_submit_flow_runs()`` at once: the query and submission its poll makes, so a run
passes the same checks either way. The poll stays, as the fallback: it finds what the stream
missed. A stream that fails or drops never stops the worker: it keeps polling and subscribes
again, backing off (bascule/retry.py).

A wake overlapping a poll starts no run twice: Prefect's worker skips a run it is already
submitting (``_submitting_flow_run_ids``, checked and added with no await between), and the
server accepts one Pending proposal per run (PreventPendingTransitions): the later is aborted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import anyio
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.events.schemas.events import Event, ResourceSpecification
from prefect.logging import get_logger
from prefect.settings import PREFECT_API_URL

from bascule.retry import backoff, retry_async

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

SCHEDULED = "prefect.flow-run.Scheduled"
_RUN_PREFIX = "prefect.flow-run."
# Logged once subscribed (tests wait for it).
LISTENING = "Hears of new runs from Prefect's events, pool"
# Subscribing again after a failure: 1, 2, 4 ... s, at most 30 s (the poll goes on meanwhile).
RESUBSCRIBE_FIRST_S, RESUBSCRIBE_CAP_S = 1.0, 30.0
# The server emits the event inside the transaction that makes the run: a query right after a
# fresh event may not see it yet, and is made again 0.1, 0.2, 0.4 s later.
LOOKS, LOOK_FIRST_S, LOOK_CAP_S = 4, 0.1, 0.4
FRESH = timedelta(seconds=10)  # older: replayed on subscribing, long committed
SEEN_MAX = 4096  # the runs remembered as taken, forgotten all at once past this

Submit = Callable[[], Awaitable[Sequence["FlowRun"]]]
Sleep = Callable[[float], Awaitable[None]]
log = get_logger("bascule.wake")


def scheduled_runs(pool: str) -> EventFilter:
    """The events of runs entering Scheduled on work pool ``pool``. On any resource: the
    server's live stream ignores a filter on related resources (it uses it for its backfill
    only). Pool names hold no glob character (DNS labels and dots): ``pool`` matches itself."""
    return EventFilter(
        event=EventNameFilter(name=[SCHEDULED]),
        any_resource=EventAnyResourceFilter(
            labels=ResourceSpecification(
                {"prefect.resource.role": "work-pool", "prefect.resource.name": pool}
            )
        ),
    )


def flow_run_id(event: Event) -> UUID | None:
    """The run ``event`` is about, None if it names none."""
    resource = event.resource.id
    if not resource.startswith(_RUN_PREFIX):
        return None
    try:
        return UUID(resource.removeprefix(_RUN_PREFIX))
    except ValueError:
        return None


class _NotListed(Exception):
    """The woken query did not list the event's run."""


async def wake(submit: Submit, event: Event, seen: set[UUID], sleep: Sleep) -> None:
    """``submit()`` for ``event``'s run, unless an earlier wake's query listed it (``seen``,
    updated). A fresh event's run not listed is looked for again (the server may not have
    committed it yet); otherwise it is the poll's: scheduled for later, or another worker's.
    An error is logged, never raised: the poll goes on."""
    run_id = flow_run_id(event)
    if run_id is None or run_id in seen:
        return
    fresh = datetime.now(UTC) - event.occurred < FRESH

    async def look() -> None:
        found = await submit()
        if len(seen) > SEEN_MAX:
            seen.clear()
        seen.update(run.id for run in found)
        if run_id not in seen:
            raise _NotListed

    def again(_: _NotListed, attempt: int) -> float | None:
        return backoff(attempt, LOOK_FIRST_S, LOOK_CAP_S) if fresh and attempt < LOOKS else None

    try:
        await retry_async(look, again, _NotListed, sleep=sleep)
    except _NotListed:
        pass
    except Exception as exc:
        log.warning("A wake for %s failed (%s); the poll will find the run", run_id, exc)


async def listen(pool: str, submit: Submit, sleep: Sleep = anyio.sleep) -> None:
    """Subscribed to ``pool``'s new runs for good, waking ``submit`` for each; subscribed
    again after any end or failure of the stream. Never raises but cancellation."""
    if not PREFECT_API_URL.value():
        # Prefect's client would start a server of its own; the worker refuses to start.
        return
    seen: set[UUID] = set()

    async def subscription() -> None:
        # An error before the stream is up is retried with a backoff; once it was up, a drop
        # ends this subscription and the next starts at once, with the backoff reset.
        subscriber = get_events_subscriber(scheduled_runs(pool), reconnect_on_clean_close=True)
        async with subscriber as events:
            log.info("%s %s", LISTENING, pool)
            try:
                async for event in events:
                    await wake(submit, event, seen, sleep)
            except Exception as exc:
                log.warning("Prefect's event stream dropped (%s); subscribing again", exc)

    def pause(exc: Exception, attempt: int) -> float:
        wait = backoff(attempt, RESUBSCRIBE_FIRST_S, RESUBSCRIBE_CAP_S)
        log.warning(
            "No Prefect event stream (%s: %s); polling only, subscribing again in %.0f s",
            type(exc).__name__, exc, wait,
        )  # fmt: skip
        return wait

    while True:
        await retry_async(subscription, pause, Exception, sleep=sleep)


@contextlib.asynccontextmanager
async def waking(pool: str, submit: Submit, enabled: bool = True) -> AsyncIterator[None]:
    """``listen`` in the background while in the block, if ``enabled``. The block's error is
    raised as it is, not in a group (``listen`` raises none of its own)."""
    if not enabled:
        yield
        return
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(listen, pool, submit)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as errors:
        if len(errors.exceptions) == 1:
            raise errors.exceptions[0] from None
        raise
