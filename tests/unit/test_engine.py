"""The adjustments to Prefect's engine (flows/engine.py): sync flow runs no longer wait for
their heartbeat thread (and a Prefect whose heartbeat function changed is named before any
patch), an expected failure is not told again once its run has ended, while a bug keeps its
traceback (in a run, tests/integration/test_trigger.py), and state messages are masked
(against the real API, tests/integration/test_state_masking.py). And tasks/run.py's step run
without a task run, which keeps the retries its task declares."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import prefect
import pytest
from prefect import State, flow_engine, task
from prefect.exceptions import FailedRun
from prefect.states import Failed

from bascule.errors import Unreachable
from bascule.flows.engine import (
    ENGINES,
    FAILED_STATE_MAKERS,
    RUN_LOGGERS,
    PrefectChanged,
    _masking,
    check_heartbeats,
    exceptions_kept_local,
    expected_failures_in_one_line,
    heartbeats_unjoined,
    state_messages_masked,
)
from bascule.redact import KNOWN, MASK
from bascule.tasks.run import untracked


def test_a_step_without_task_run_retries_as_its_task_declares() -> None:
    calls: list[int] = []

    @task(retries=2, retry_delay_seconds=[0, 0.01])
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise RuntimeError("not yet")
        return x * 2

    assert untracked(flaky)(4) == 8
    assert calls == [4, 4, 4]


def test_a_step_without_task_run_raises_after_its_last_retry() -> None:
    calls: list[int] = []

    @task(retries=1, retry_delay_seconds=0)
    def broken() -> None:
        calls.append(1)
        raise ValueError("still broken")

    with pytest.raises(ValueError, match="still broken"):
        untracked(broken)()
    assert len(calls) == 2


def test_sync_flow_runs_leave_their_heartbeat_thread_to_stop_by_itself() -> None:
    heartbeats_unjoined()
    heartbeats_unjoined()  # idempotent: one partial, not one per import
    patched = flow_engine._send_heartbeats
    assert getattr(patched, "keywords", None) == {"join_on_exit": False}
    # The Prefect function it wraps still takes the argument (a Prefect upgrade that drops
    # it fails here, not at the end of every run).
    original = getattr(patched, "func", None)
    assert original is not None and "join_on_exit" in inspect.signature(original).parameters
    assert not hasattr(original, "keywords")
    assert check_heartbeats(original, prefect.__version__) is original


def _no_join_argument(engine: object) -> None:
    pass


def _joins_by_default_no_more(engine: object, join_on_exit: bool = False) -> None:
    pass


def _keyword_only(engine: object, *, join_on_exit: bool = True) -> None:
    pass


@pytest.mark.parametrize(
    ("send", "found"),
    [
        (None, "no such function"),
        (_no_join_argument, "_send_heartbeats(engine: 'object')"),
        (_joins_by_default_no_more, "join_on_exit: 'bool' = False"),
        (_keyword_only, "*, join_on_exit"),
    ],
)
def test_a_prefect_whose_heartbeat_function_changed_is_named_before_any_patch(
    monkeypatch: pytest.MonkeyPatch, send: object, found: str
) -> None:
    monkeypatch.setattr(flow_engine, "_send_heartbeats", send, raising=False)
    if send is None:
        monkeypatch.delattr(flow_engine, "_send_heartbeats")
    with pytest.raises(PrefectChanged) as raised:
        heartbeats_unjoined()
    said = str(raised.value)
    assert f"Prefect {prefect.__version__} does not have" in said and found in said
    assert "prefect.yaml's prefect-version" in said and "heartbeats_unjoined" in said
    assert getattr(flow_engine, "_send_heartbeats", None) is send  # nothing patched


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("name", RUN_LOGGERS)
def test_once_a_run_ended_only_a_bug_is_told_again(name: str) -> None:
    logger, kept = logging.getLogger(name), Kept()
    expected_failures_in_one_line()
    installed = list(logger.filters)
    expected_failures_in_one_line()  # idempotent: one filter, not one per import
    assert logger.filters == installed
    logger.addHandler(kept)
    bug = RuntimeError("a bug")
    try:
        for exc in (FailedRun("the Failed state a flow returned"), Unreachable("no db"), bug):
            try:
                raise exc
            except Exception:
                # Not to the API: there is no run here.
                logger.error("Ended with", exc_info=True, extra={"send_to_api": False})
    finally:
        logger.removeHandler(kept)
    assert [r.exc_info[1] for r in kept.records if r.exc_info] == [bug]
    assert len(kept.records) == 1


SECRET = "engine-canary-4b1d9e0f"


def test_every_engine_masks_a_state_message_before_it_sets_the_state() -> None:
    state_messages_masked()
    state_messages_masked()  # idempotent: wrapped once
    for engine in ENGINES:
        original = getattr(engine.set_state, "__wrapped__", None)
        assert original is not None and not hasattr(original, "__wrapped__"), engine
        # What the wrapper passes on is what Prefect's set_state takes.
        assert list(inspect.signature(original).parameters)[:3] == ["self", "state", "force"]
    KNOWN.add([SECRET])
    seen: list[str | None] = []

    def set_state(engine: Any, state: State[Any], force: bool = False) -> State[Any]:
        seen.append(state.message)
        return state

    async def set_state_async(engine: Any, state: State[Any], force: bool = False) -> State[Any]:
        return set_state(engine, state, force)

    told = f"Task run encountered an exception ValueError: bad token {SECRET}"
    assert _masking(set_state)(None, Failed(message=told)).message == told.replace(SECRET, MASK)
    asyncio.run(_masking(set_state_async)(None, Failed(message=told), force=True))
    assert seen == [told.replace(SECRET, MASK)] * 2


def test_the_engines_make_failed_states_without_a_result_store() -> None:
    """The exception stays the state's data, in the process: never a result record that is
    written to storage (tests/integration/test_state_masking.py against the real API)."""
    exceptions_kept_local()
    exceptions_kept_local()  # idempotent: wrapped once
    for module, name in FAILED_STATE_MAKERS:
        original = getattr(getattr(module, name), "__wrapped__", None)
        assert original is not None and not hasattr(original, "__wrapped__"), name
        assert list(inspect.signature(original).parameters)[:3] == [
            "exc",
            "result_store",
            "write_result",
        ]
    bug = RuntimeError("boom")
    writes: list[Any] = []

    class Store:  # what the engine would pass: a store that records what it is asked
        def create_result_record(self, obj: Any, key: str) -> Any:
            writes.append(obj)
            return obj

    make = flow_engine.exception_to_failed_state
    state = asyncio.run(make(bug, result_store=Store(), write_result=True, message="Failed:"))
    assert state.data is bug and writes == [] and state.message == "Failed: RuntimeError: boom"
