"""A secret in a failing task's exception, and in the Failed state a flow returns, reaches the
real Prefect API masked: in the task run's and the flow run's state messages, every state
they went through, and their logs. Prefect writes ``str(exc)`` into the state message itself,
past the log masking; flows/engine.py masks it where the engines set a state.

And nothing else carries it: a flow run's engine used to pickle the exception it ended with
into result storage (~/.prefect/storage), in clear; flows/engine.py keeps it in the process.
Everything the API holds of the runs (runs, states and their data, logs, artifacts, events)
and every file of result storage is searched for the value in any of its forms.

The session's Prefect server (``prefect_server``)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx
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
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import Failed

import bascule.flows.deploy  # noqa: F401  (every flow imports it: it adjusts Prefect's engines)
from bascule.config import SecretRef
from bascule.redact import MASK, Redactor
from bascule.tasks.secretref import resolve
from tests.support.cluster import wait_for

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

SECRET = f"state-canary-{uuid.uuid4().hex}"


@task(name="leaky-step")
def leaky_step() -> None:
    raise RuntimeError(f"connecting with password {SECRET} failed")


@flow(name="leaky-task")
def leaky_task() -> None:
    leaky_step()


@flow(name="leaky-flow")
def leaky_flow() -> None:
    # The value as typed, in base64 and percent-encoded: forms error texts quote it in.
    encoded = base64.b64encode(SECRET.encode()).decode()
    raise RuntimeError(f"login {SECRET} refused; header {encoded}; url ?p={quote(SECRET)}")


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


def everything(api: httpx.Client, run_id: UUID, since: str, ended: set[str]) -> dict[str, str]:
    """All the API holds of a flow run and its task runs, as JSON texts, once the events
    ``ended`` arrived: the runs, every state with its data, logs, artifacts, events."""
    flow_run = f"prefect.flow-run.{run_id}"
    query = {"filter": {"occurred": {"since": since}, "any_resource": {"id": [flow_run]}}}
    events = wait_for(
        lambda: (
            (found := api.post("/events/filter", json={**query, "limit": 50}).json()["events"])
            and ended <= {e["event"] for e in found}
            and found
        ),
        timeout=30,
        what="the runs' Failed events",
    )
    runs = {"flow_runs": {"id": {"any_": [str(run_id)]}}}
    task_runs = api.post("/task_runs/filter", json=runs).json()
    return {
        "flow run": api.get(f"/flow_runs/{run_id}").text,
        "flow run states": api.get("/flow_run_states/", params={"flow_run_id": run_id}).text,
        "task runs": json.dumps(task_runs),
        "task run states": json.dumps(
            [
                api.get("/task_run_states/", params={"task_run_id": r["id"]}).json()
                for r in task_runs
            ]
        ),
        "logs": api.post(
            "/logs/filter", json={"logs": {"flow_run_id": {"any_": [str(run_id)]}}}
        ).text,
        "artifacts": api.post("/artifacts/filter", json=runs).text,
        "events": json.dumps(events),
    }


def test_a_secret_in_an_exception_is_in_nothing_the_api_or_result_storage_holds(
    api: str, secret: str, tmp_path: Path
) -> None:
    """The attack: whoever holds a Prefect API credential, or reads the worker's disk, reads
    what the runs left there. A task and a flow raise the secret, in several forms."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 1))
    storage = tmp_path / "storage"
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        raised_in_task = leaky_task(return_state=True)
        raised_in_flow = leaky_flow(return_state=True)
    with pytest.raises(RuntimeError, match=SECRET):  # here, in the process, it is whole
        raised_in_flow.result()
    failed = "prefect.flow-run.Failed"
    ends = [(raised_in_task, {failed, "prefect.task-run.Failed"}), (raised_in_flow, {failed})]
    produced: dict[str, str] = {}
    with httpx.Client(base_url=api, timeout=30) as client:
        for state, ended in ends:
            run_id = state.state_details.flow_run_id
            assert state.is_failed() and run_id is not None
            for what, text in everything(client, run_id, since, ended).items():
                produced[f"{state.name} {run_id}: {what}"] = text
    produced |= {str(p): p.read_text(errors="replace") for p in storage.rglob("*") if p.is_file()}
    assert any("login *** refused" in text for text in produced.values())
    finds = Redactor([secret])  # the value in any form the redactor knows
    assert [where for where, text in produced.items() if finds.redact(text) != text] == []
    # Nothing written at all: a failed run's exception has no other place to go.
    assert not storage.exists() or not any(storage.iterdir())
