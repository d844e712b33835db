"""bascule/wake.py: the filter a worker subscribes with, read as Prefect's server reads it; a
wake's queries; a stream that fails, drops or ends, and the worker's own error."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest
from prefect.events.schemas.events import Event
from prefect.server.events.filters import EventFilter as ServerFilter
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.settings import PREFECT_API_URL, temporary_settings

from bascule import wake

POOL = "bascule-staging"


def scheduled(pool: str = POOL, run: UUID | None = None, age: float = 0.0) -> Event:
    """A run's Scheduled event as Prefect's server emits it (prefect/server/models/events.py):
    the run as resource, its flow, deployment, queue and pool related."""
    related: list[dict[str, str]] = [
        {"prefect.resource.id": f"prefect.flow.{uuid4()}", "prefect.resource.role": "flow",
         "prefect.resource.name": "deploy"},
        {"prefect.resource.id": f"prefect.deployment.{uuid4()}",
         "prefect.resource.role": "deployment", "prefect.resource.name": "staging"},
        {"prefect.resource.id": f"prefect.work-queue.{uuid4()}",
         "prefect.resource.role": "work-queue", "prefect.resource.name": "default"},
        {"prefect.resource.id": f"prefect.work-pool.{uuid4()}",
         "prefect.resource.role": "work-pool", "prefect.resource.name": pool,
         "prefect.work-pool.type": "bascule"},
        {"prefect.resource.id": f"prefect.tag.{pool}", "prefect.resource.role": "tag"},
    ]  # fmt: skip
    return Event(
        occurred=datetime.now(UTC) - timedelta(seconds=age),
        event=wake.SCHEDULED,
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run or uuid4()}",
            "prefect.state-type": "SCHEDULED",
        },
        related=related,
    )


def server_includes(pool: str, event: Event) -> bool:
    """Whether the server's live stream sends ``event`` to a subscriber of ``pool``'s filter
    (prefect/server/api/events.py reads the filter message; stream.py applies it)."""
    message = wake.scheduled_runs(pool).model_dump(mode="json")
    received = ReceivedEvent.model_validate(event.model_dump(mode="json"))
    return ServerFilter.model_validate(message).includes(received)


def test_the_filter_takes_new_runs_of_its_pool_only() -> None:
    assert server_includes(POOL, scheduled())
    assert not server_includes(POOL, scheduled(pool="bascule-production"))
    assert not server_includes(POOL, scheduled(pool=f"{POOL}-kubernetes"))
    pending = scheduled().model_copy(update={"event": "prefect.flow-run.Pending"})
    assert not server_includes(POOL, pending)
    # The pool itself changing is no run.
    pool_event = Event(
        event="prefect.work-pool.updated",
        resource={"prefect.resource.id": f"prefect.work-pool.{uuid4()}",
                  "prefect.resource.role": "work-pool", "prefect.resource.name": POOL},
    )  # fmt: skip
    assert not server_includes(POOL, pool_event)


def test_the_run_of_an_event() -> None:
    run = uuid4()
    assert wake.flow_run_id(scheduled(run=run)) == run
    for resource in (f"prefect.deployment.{run}", "prefect.flow-run.not-a-uuid"):
        event = Event(event=wake.SCHEDULED, resource={"prefect.resource.id": resource})
        assert wake.flow_run_id(event) is None


class Pool:
    """The worker's query as a wake sees it: the runs it lists, call after call."""

    def __init__(self, *listings: Sequence[UUID], error: Exception | None = None) -> None:
        self.listings = list(listings)
        self.calls = 0
        self.error = error

    async def submit(self) -> list[Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        listed = self.listings.pop(0) if self.listings else ()
        return [SimpleNamespace(id=run) for run in listed]


class Sleeps:
    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


def woken(pool: Pool, event: Event, seen: set[UUID] | None = None) -> list[float]:
    sleeps = Sleeps()
    anyio.run(wake.wake, pool.submit, event, set() if seen is None else seen, sleeps)
    return sleeps.waited


def test_a_listed_run_is_queried_once_and_remembered() -> None:
    run, other = uuid4(), uuid4()
    pool, seen = Pool([run, other]), set[UUID]()
    assert woken(pool, scheduled(run=run), seen) == []
    assert pool.calls == 1 and seen == {run, other}
    # Its event again (a replay on subscribing), or the other's: no query.
    woken(pool, scheduled(run=run), seen)
    woken(pool, scheduled(run=other), seen)
    assert pool.calls == 1


def test_a_fresh_run_not_yet_listed_is_looked_for_again_a_few_times() -> None:
    run = uuid4()
    pool = Pool([], [], [run])  # the server committed it after the first two queries
    assert woken(pool, scheduled(run=run)) == [0.1, 0.2]
    assert pool.calls == 3
    never = Pool()  # scheduled for later, or another worker's: the poll's
    assert woken(never, scheduled()) == [0.1, 0.2, 0.4]
    assert never.calls == wake.LOOKS


def test_an_old_event_is_queried_once() -> None:
    pool = Pool()
    assert woken(pool, scheduled(age=60)) == []
    assert pool.calls == 1


def test_a_failed_query_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    pool = Pool(error=RuntimeError("503 from the API"))
    assert woken(pool, scheduled()) == []
    assert "503 from the API" in caplog.text and "the poll will find the run" in caplog.text


class Subscriber:
    """Prefect's subscriber as ``get_events_subscriber`` gives it, playing ``plays`` one
    subscription after another: an error on connecting, events then an error (a drop), or
    events then the end; the last one waits for good."""

    def __init__(self, plays: list[Exception | list[Event | Exception]]) -> None:
        self.plays = plays
        self.filters: list[Any] = []

    def __call__(self, filter: Any, **_: Any) -> Any:
        self.filters.append(filter)
        play = self.plays.pop(0) if self.plays else None

        @contextlib.asynccontextmanager
        async def subscription() -> AsyncIterator[AsyncIterator[Event]]:
            if isinstance(play, Exception):
                raise play
            yield events(play)

        async def events(items: list[Event | Exception] | None) -> AsyncIterator[Event]:
            if items is None:
                await anyio.sleep_forever()
            for item in items or ():
                if isinstance(item, Exception):
                    raise item
                yield item

        return subscription()


def test_the_stream_failing_dropping_or_ending_is_subscribed_to_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = [uuid4(), uuid4(), uuid4()]
    subscriber = Subscriber(
        [
            OSError("connection refused"),  # the server is down
            OSError("connection refused"),
            [scheduled(run=runs[0]), ConnectionError("server restarted")],
            [scheduled(run=runs[1])],  # the server closed the stream
            [scheduled(run=runs[2])],
        ]
    )
    monkeypatch.setattr(wake, "get_events_subscriber", subscriber)
    pool, sleeps = Pool([runs[0]], [runs[1]], [runs[2]]), Sleeps()

    async def main() -> None:
        with anyio.move_on_after(0.5):
            await wake.listen(POOL, pool.submit, sleeps)

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        anyio.run(main)
    assert pool.calls == 3
    # Backing off while it fails to subscribe; at once again after a drop or an end.
    assert sleeps.waited == [1.0, 2.0]
    assert len(subscriber.filters) == 6
    wanted = wake.scheduled_runs(POOL)
    assert all(
        (f.event, f.any_resource) == (wanted.event, wanted.any_resource) for f in subscriber.filters
    )


def test_the_workers_own_error_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    listening: list[str] = []

    async def listen(pool: str, submit: Any) -> None:
        listening.append(pool)
        await anyio.sleep_forever()

    monkeypatch.setattr(wake, "listen", listen)

    async def main(enabled: bool) -> None:
        async with wake.waking(POOL, Pool().submit, enabled):
            await anyio.sleep(0.01)
            raise KeyError("the worker's loop")

    for enabled in (True, False):
        with pytest.raises(KeyError, match="the worker's loop"):
            anyio.run(main, enabled)
    assert listening == [POOL]


def test_both_workers_start_woken_by_their_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.workers.base import BaseWorker

    from bascule import kubeworker, worker
    from bascule.jobpolicy import JobPolicy
    from bascule.runpolicy import Policy

    entered: list[tuple[str, bool, bool]] = []

    @contextlib.asynccontextmanager
    async def waking(pool: str, submit: Any, enabled: bool = True) -> AsyncIterator[None]:
        entered.append((pool, enabled, False))
        yield

    async def start(self: Any, run_once: bool = False, *_: Any) -> None:
        pool, enabled, _started = entered[-1]
        entered[-1] = (pool, enabled, True)  # Prefect's loops run inside the wake

    monkeypatch.setattr(worker, "waking", waking)
    monkeypatch.setattr(kubeworker, "waking", waking)
    monkeypatch.setattr(BaseWorker, "start", start)
    policy = Policy("staging", "https://example.invalid/app.git", namespaces=frozenset({"ns"}))
    anyio.run(worker.BasculeWorker(policy).start)
    anyio.run(worker.BasculeWorker(policy).start, True)  # once: no stream to wait for
    job_policy = JobPolicy(policy, "registry.example/bascule:1", "http://prefect:4200/api")
    anyio.run(kubeworker.BasculeKubernetesWorker(job_policy).start)
    assert entered == [
        ("bascule-staging", True, True),
        ("bascule-staging", False, True),
        ("bascule-staging-kubernetes", True, True),
    ]
