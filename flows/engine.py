"""Four adjustments to Prefect's engines, made when the flows are imported (flows/deploy.py,
which every flow imports), so in ``bascule deploy``'s process as in the flow-run process a
worker starts. (A step without a task run of its own is ``tasks.run.untracked``.)

State messages masked. Prefect writes ``str(exc)`` of the exception a task run or a flow run
ends with into its Failed state's message, and a flow's returned state carries the message
Bascule gave it: both reach the API (and the state-change events) as they are, beside the
masking of log records. Every state a run or task run sets has its message masked first
(``bascule.redact.KNOWN``), in the one place all of them pass: the engines' ``set_state``.

Exceptions kept in the process. A flow run's engine pickles the exception the run ends with
into result storage (a file under ~/.prefect/storage by default, whatever
``persist_result`` says) and sends the API its address; a task run's does so when results
are persisted. The pickle holds the exception's text, unmasked. So the engines make a
Failed state without a result store: its data is the exception itself, which stays in the
process (``state.result()`` there still raises it) and is never written or sent.

Expected failures in one line. Prefect logs the exception a run or a task ends with, with its
traceback; and a flow-run process a worker starts (``python -m prefect.engine``) reads the
Failed state the flow returned and logs it once more, as Prefect's ``FailedRun`` with its
traceback, after the run's last line. For an expected failure (a ``BasculeError``, or a flow's
returned Failed state) the run's log keeps the line without the traceback, and the engine's
telling once the run has ended is left out: ``Finished in state …`` has said why just before.
Any other exception keeps its traceback: it is a bug.

Heartbeats. Every flow run sends heartbeats from a thread of its own (Prefect 3.9 on by
default, every 180 s; ``bascule deploy`` every 30 s for the recover automation). That thread
sleeps in steps of one second, and a sync flow run, once finished, joins it: each run ends 0
to 1 s (0.5 s on average) later than its work, measured with py-spy on `make bench`'s deploys
and rollbacks. Prefect's async engine already leaves the thread to stop by itself
(``join_on_exit=False``); so do our sync runs. The thread still sends no heartbeat after the
run ends: it looks at its stop flag after every second of sleep, before anything else.
Prefect has no public switch for this, so a private function is patched; the patch checks
first that the function is the one it was written for, and stops the import with
``PrefectChanged``, naming the installed version and what to do, when it is not.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from functools import partial, wraps
from typing import Any

import prefect
from prefect import State, flow_engine, task_engine
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import FailedRun

from bascule.errors import BasculeError, LockLost
from bascule.redact import redact

_UNJOINED = "bascule_unjoined"


class PrefectChanged(RuntimeError):
    """The installed Prefect's private code that this module adjusts is not as it was
    written for: a bug of the installation (or of an upgrade), not of a run."""


def check_heartbeats(send: object, version: str) -> Callable[..., Any]:
    """``send`` if it is ``_send_heartbeats(engine, join_on_exit=True)``, the private function
    ``heartbeats_unjoined`` patches, as Prefect has it at the version prefect.yaml's
    prefect-version names; else PrefectChanged. There is no public way to the same effect:
    the heartbeat setting (PREFECT_FLOWS_HEARTBEAT_FREQUENCY) only sets or stops the
    heartbeats, which the recover automation needs."""
    found = "no such function"
    if callable(send):
        try:
            signature: inspect.Signature | None = inspect.signature(send)
        except (TypeError, ValueError):  # a callable whose signature Python cannot read
            signature = None
        params = list(signature.parameters.values()) if signature else []
        if (
            [p.name for p in params] == ["engine", "join_on_exit"]
            and params[1].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            and params[1].default is True
        ):
            return send
        found = f"_send_heartbeats{signature}" if signature else repr(send)
    raise PrefectChanged(
        f"Prefect {version} does not have the prefect.flow_engine._send_heartbeats(engine, "
        f"join_on_exit=True) that flows/engine.py's heartbeats_unjoined patches (it has "
        f"{found}). Install the Prefect that prefect.yaml's prefect-version names "
        "(pip install -r requirements.lock), or read how this Prefect's sync flow runs end "
        "their heartbeat thread and update heartbeats_unjoined (drop it if they no longer "
        "wait for it)."
    )


def heartbeats_unjoined() -> None:
    """Makes sync flow runs end without waiting for their heartbeat thread; idempotent.
    PrefectChanged, before any change, if Prefect's function is not the one it knows."""
    current = getattr(flow_engine, "_send_heartbeats", None)
    if getattr(current, _UNJOINED, False):
        return
    unjoined = partial(check_heartbeats(current, prefect.__version__), join_on_exit=False)
    setattr(unjoined, _UNJOINED, True)
    flow_engine._send_heartbeats = unjoined


_MASKING = "bascule_masking"
ENGINES = (
    task_engine.SyncTaskRunEngine,
    task_engine.AsyncTaskRunEngine,
    flow_engine.FlowRunEngine,
    flow_engine.AsyncFlowRunEngine,
)


def masked(state: State[Any]) -> State[Any]:
    """``state`` with the known secrets masked in its message (in place: the engine and the
    caller share it)."""
    if state.message:
        state.message = redact(state.message)
    return state


def state_messages_masked() -> None:
    """Makes every engine mask a state's message before it sets the state; idempotent."""
    for engine in ENGINES:
        if not getattr(engine.set_state, _MASKING, False):
            engine.set_state = _masking(engine.set_state)  # type: ignore[method-assign]


def _masking(set_state: Callable[..., Any]) -> Callable[..., Any]:
    """``set_state`` (sync or async) masking the state's message first."""
    return _around(
        set_state, lambda args, kw: ((args[0], masked(args[1]), *args[2:]), kw), _MASKING
    )


# Where the engines turn the exception a task run or a flow run ends with into its Failed
# state: (module, name), each imported by name into its engine's module.
FAILED_STATE_MAKERS = (
    (flow_engine, "exception_to_failed_state"),
    (task_engine, "exception_to_failed_state"),
    (task_engine, "exception_to_failed_state_sync"),
)
_LOCAL = "bascule_local"


def exceptions_kept_local() -> None:
    """Makes the engines keep the exception a run or a task run fails with in this process:
    in its Failed state's data, never in result storage; idempotent."""
    for module, name in FAILED_STATE_MAKERS:
        make = getattr(module, name)
        if not getattr(make, _LOCAL, False):
            setattr(module, name, _around(make, _without_result_store, _LOCAL))


def _without_result_store(
    args: tuple[Any, ...], kw: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    # No store: the state's data is the exception itself, which Prefect sends to no one.
    return args[:1], {**kw, "result_store": None, "write_result": False}


Adjust = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


def _around(fn: Callable[..., Any], adjust: Adjust, mark: str) -> Callable[..., Any]:
    """``fn`` (sync or async, so the wrapper too) called with its arguments ``adjust``ed,
    marked with ``mark`` so that it is wrapped once."""
    if inspect.iscoroutinefunction(fn):

        @wraps(fn)
        async def adjusted_async(*args: Any, **kw: Any) -> Any:
            args, kw = adjust(args, kw)
            return await fn(*args, **kw)

        wrapper: Callable[..., Any] = adjusted_async
    else:

        @wraps(fn)
        def adjusted(*args: Any, **kw: Any) -> Any:
            args, kw = adjust(args, kw)
            return fn(*args, **kw)

        wrapper = adjusted
    setattr(wrapper, mark, True)
    return wrapper


# Prefect's loggers that log the exception a run ends with: the run's own and its tasks' (the
# run's log in the API, and the console), and the flow-run process's engine (its stderr).
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def expected(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an expected failure: a BasculeError, or Prefect's FailedRun, raised
    when the Failed state a flow returned is read (Bascule's flows end an expected failure by
    returning a Failed state that names it)."""
    return isinstance(exc, BasculeError | FailedRun | LockLost)


class _OneLine(logging.Filter):
    """A record of an expected failure: without its traceback in a run, left out once the run
    has ended."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.exc_info and expected(record.exc_info[1])):
            return True
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return False  # the engine telling again how a run ended
        record.exc_info = record.exc_text = None
        return True


_ONE_LINE = _OneLine()


def expected_failures_in_one_line() -> None:
    """Installs the filter on Prefect's run loggers; idempotent. Logger filters stay through
    Prefect's logging setup (``logging.config.dictConfig`` keeps them)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)
