"""``bascule abort RUN``: stop a deploy and undo what it started. Before the switch the idle
color it started goes to zero and traffic never moves; after the switch traffic goes back to
the old color, as an automatic rollback does.

The request is Prefect's own cancel (the flow run set Cancelling, as the UI's Cancel does),
with who asked and why in the state's message, so it needs Prefect access only, never the
cluster's credentials: a run in a process of its own sees the request and puts right what it
started itself; a worker's run is killed by its worker and put right by ``recover/<env>``
(tasks/abort.py). Either way the history records the release "aborted", with the request.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from bascule.cli import verdict
from bascule.cli.options import add_api_patience_argument, patiently
from bascule.cli.run import requester
from bascule.errors import OperationFailed, UsageError
from bascule.markdown import one_line
from bascule.outcome import TERMINAL_TYPES, Exit, StateName

if TYPE_CHECKING:
    from prefect.client.schemas import OrchestrationResult
    from prefect.client.schemas.objects import FlowRun

    from bascule.prefect_client import Prefect

# The flows whose runs deploy a release through the pipeline (flows/deploy.py): a rollback
# returns to a verified release, and undoing it half-way would leave the bad one serving.
ABORTABLE = ("deploy", "redeploy")
WAIT_S = 120.0
KILLED = "Cancelled"  # the name of the state Prefect's worker ends a run it killed in
POLL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "flow_run",
        type=UUID,
        metavar="RUN",
        help="the deploy's flow run id (bascule pending, bascule trigger's output, the UI)",
    )
    parser.add_argument(
        "--as",
        dest="requester",
        default=None,
        help="who aborts (default: $GITHUB_ACTOR or the login name); recorded in the history",
    )
    parser.add_argument("--reason", default="", help="why; recorded in the history")
    parser.add_argument(
        "--timeout",
        type=float,
        default=WAIT_S,
        metavar="SECONDS",
        help="how long to wait for the run to stop (default: %(default)s; 0: do not wait)",
    )
    add_api_patience_argument(parser)


def request_message(who: str, reason: str) -> str:
    """The Cancelling state's message: who asked and why, as the history records it."""
    return f"aborted by {who}" + (f": {reason.strip()}" if reason.strip() else "")


def refusal(run_id: UUID, flow: str, state_type: str, state_name: str | None) -> str | None:
    """Why ``run_id`` cannot be aborted, or None if it can."""
    if flow not in ABORTABLE:
        return (
            f"{run_id} is a run of the {flow} flow: only a deploy ({', '.join(ABORTABLE)}) is "
            "aborted; nothing was changed"
        )
    if state_type in TERMINAL_TYPES:
        return f"{run_id} has already ended ({state_name}); nothing was changed"
    return None


def run(args: argparse.Namespace) -> int:
    from prefect.states import Cancelling

    from bascule.prefect_client import ApiSettings, Prefect, api_errors

    run_id: UUID = args.flow_run
    message = request_message(args.requester or requester(), args.reason)
    not_found = f"there is no flow run {run_id}; give a deploy's flow run id"

    def read(prefect: Prefect) -> FlowRun:
        with api_errors(f"reading flow run {run_id}", not_found=not_found):
            return prefect.client.read_flow_run(run_id)

    with Prefect(ApiSettings.from_prefect()) as prefect:
        flow_run = patiently(lambda: read(prefect), args.api_patience)
        with api_errors(f"reading the flow of {run_id}"):
            flow = prefect.client.read_flow(flow_run.flow_id).name
        state = flow_run.state
        kind, name = (state.type.value, state.name) if state else ("", None)
        if (why := refusal(run_id, flow, kind, name)) is not None:
            raise UsageError(why)
        with api_errors(f"cancelling flow run {run_id}", not_found=not_found):
            result: OrchestrationResult[Any] = prefect.client.set_flow_run_state(
                run_id, Cancelling(message=message)
            )
        if result.state is not None and result.state.is_cancelled():
            # Prefect cancels a run that has not started (no process to stop) at once.
            verdict(f"{run_id}: cancelled before it started; nothing had changed", failed=False)
            return int(Exit.COMPLETED)
        if result.status.value != "ACCEPT":
            reason = getattr(result.details, "reason", None) or "no reason given"
            raise OperationFailed(f"{run_id} not cancelled ({result.status.value}): {reason}")
        print(f"{run_id}: {message}; waiting for the run to stop")
        deadline = time.monotonic() + args.timeout
        while (state := patiently(lambda: read(prefect), args.api_patience).state) is None or (
            state.type.value not in TERMINAL_TYPES
        ):
            if time.monotonic() >= deadline:
                verdict(f"{run_id} has not stopped yet: it stops at its next step")
                return int(Exit.WAIT_TIMED_OUT)
            time.sleep(POLL_S)
    said = f"{state.name}: {one_line(state.message or '')}"
    # Aborted: it put itself right; Cancelled: its worker killed it. Any other name: it got
    # through first, and says so (flows/deploy.py ``too_late``).
    if not state.is_cancelled() or state.name not in (StateName.ABORTED, KILLED):
        raise OperationFailed(f"{run_id} ended before the abort took effect: {said}")
    if state.name == KILLED:  # the recovery its end starts puts right what it left
        said += f" (recover/{flow_run.parameters.get('environment')} puts right what it left)"
    verdict(said, failed=False)
    return int(Exit.COMPLETED)
