"""The run bookkeeping cut for speed (flows/engine.py): a step run without a task run keeps
the retries its task declares, and sync flow runs no longer wait for their heartbeat thread."""

from __future__ import annotations

import inspect

import pytest
from prefect import flow_engine, task

from flows.engine import heartbeats_unjoined, untracked


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
