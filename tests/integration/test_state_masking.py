"""A secret in a failing task's exception, and in the Failed state a flow returns, reaches the
real Prefect API masked: in the task run's and the flow run's state messages, every state
they went through, and their logs. Prefect writes ``str(exc)`` into the state message itself,
past the log masking; flows/engine.py masks it where the engines set a state.

The session's Prefect server (``prefect_server``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect import State, flow, task
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType, TaskRun
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed

import flows.deploy  # noqa: F401  (every flow imports it: it adjusts Prefect's engines)
from bascule.config import SecretRef
from bascule.redact import MASK
from tasks.secretref import resolve

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

SECRET = f"state-canary-{uuid.uuid4().hex}"


@task(name="leaky-step")
def leaky_step() -> None:
    raise RuntimeError(f"connecting with password {SECRET} failed")


@flow(name="leaky-task")
def leaky_task() -> None:
    leaky_step()


@flow(name="leaky-return")
def leaky_return() -> State[Any]:
    return Failed(message=f"check quoted the body {{'token': '{SECRET}'}}")


@pytest.fixture(scope="module")
def api(prefect_server: str) -> Iterator[str]:
    """The session's server: Prefect's events worker, which carries task runs' states, is
    one per process and keeps the server it first sent to."""
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server
        APILogHandler().flush()  # the runs' last log lines


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """SECRET, resolved as a deploy resolves its secrets: from then on the process masks it."""
    monkeypatch.setenv("BASCULE_T_STATE_SECRET", SECRET)
    assert resolve(SecretRef(env="BASCULE_T_STATE_SECRET"), "secrets.T") == SECRET
    return SECRET


def failed_task_runs(client: SyncPrefectClient, run_id: UUID) -> list[TaskRun]:
    """The flow run's task runs, once the server recorded them failed: task run states
    arrive as events, a moment after the flow run ends."""
    deadline = time.monotonic() + 30
    while True:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        if runs and all(r.state_type == StateType.FAILED for r in runs):
            return runs
        assert time.monotonic() < deadline, [(r.name, r.state_type) for r in runs]
        time.sleep(0.5)


def logs(client: SyncPrefectClient, run_id: UUID) -> list[str]:
    """The flow run's log lines, once the one telling the exception arrived (masked)."""
    deadline = time.monotonic() + 30
    while True:
        found = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )
        lines = [log.message for log in found]
        if any("RuntimeError" in line for line in lines):
            return lines
        assert time.monotonic() < deadline, lines
        time.sleep(0.5)


def told(client: SyncPrefectClient, run_id: UUID) -> list[str]:
    """Every state message and log line the API holds for the flow run and its task runs."""
    texts = [s.message or "" for s in client.read_flow_run_states(run_id)]
    for run in failed_task_runs(client, run_id):
        texts += [s.message or "" for s in client.read_task_run_states(run.id)]
    return texts + logs(client, run_id)


def test_a_failing_tasks_exception_reaches_the_api_masked(api: str, secret: str) -> None:
    state = leaky_task(return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        run_id = state.state_details.flow_run_id
        assert run_id is not None
        flow_run = client.read_flow_run(run_id)
        assert flow_run.state is not None and flow_run.state.message is not None
        assert f"password {MASK} failed" in flow_run.state.message
        (task_run,) = failed_task_runs(client, run_id)
        assert task_run.state is not None and task_run.state.message is not None
        assert f"password {MASK} failed" in task_run.state.message
        texts = told(client, run_id)
    assert texts and not [text for text in texts if secret in text]


def test_a_failed_state_a_flow_returns_reaches_the_api_masked(api: str, secret: str) -> None:
    state = leaky_return(return_state=True)
    with get_client(sync_client=True) as client:
        run_id = state.state_details.flow_run_id
        assert run_id is not None
        run = client.read_flow_run(run_id)
        assert run.state is not None
        assert run.state.message == f"check quoted the body {{'token': '{MASK}'}}"
        assert not [s for s in client.read_flow_run_states(run_id) if secret in (s.message or "")]
