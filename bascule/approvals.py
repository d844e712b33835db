"""``bascule pending | approve RUN | reject RUN``: answering an approval gate without the UI.

Prefect has no resume command; these resume the run through Prefect's client with the same
input the UI's form sends, and read the orchestration status in the answer (ACCEPT, REJECT or
ABORT), because the HTTP code alone is 200 either way. Prefect is imported when a command
runs, not when the CLI builds its parser.

Expected failures raise ``bascule.errors`` (the CLI prints them and exits with their code):
PREFECT_API_URL unset, no such run or input refused (2), the Prefect API unreachable (7).
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import TYPE_CHECKING
from uuid import UUID

from bascule.errors import OperationFailed, UsageError
from bascule.outcome import Exit
from bascule.trigger.options import DEFAULT_API_PATIENCE

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from bascule.prefect_client import Prefect


def _prefect() -> Prefect:
    from bascule.prefect_client import ApiSettings, Prefect

    return Prefect(ApiSettings.from_prefect())


def pending_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", default=None, help="only runs of this flow (e.g. deploy)")
    parser.add_argument(
        "--details",
        action="store_true",
        help="also what each approver is shown: the checks and the migration plan (its SQL)",
    )


def pending(args: argparse.Namespace) -> int:
    from bascule.prefect_client import api_errors, patiently

    def read() -> list[FlowRun]:
        with api_errors("reading paused flow runs"):
            return prefect.paused_flow_runs(args.flow)

    with _prefect() as prefect:
        runs = patiently(read, DEFAULT_API_PATIENCE)
        if not runs:
            print("no run is waiting for approval")
        for run in runs:
            params = run.parameters
            env, image = params.get("environment"), params.get("image")
            print(f"{run.id}  {run.name}  env={env} image={image}")
            if args.details:
                with api_errors("reading the approval form"):
                    text = prefect.approval_text(run)
                print("\n".join("    " + line for line in (text or "(no form)").splitlines()))
    return int(Exit.COMPLETED)


def decision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "flow_run", type=UUID, metavar="RUN", help="flow run id (see bascule pending)"
    )
    parser.add_argument(
        "--as",
        dest="approver",
        default=os.environ.get("BASCULE_APPROVER") or getpass.getuser(),
        help="who decides (default: $BASCULE_APPROVER or the login name); recorded in the history",
    )
    parser.add_argument("--comment", default="", help="recorded with the decision")


def decide(args: argparse.Namespace, approve: bool) -> int:
    from bascule.prefect_client import api_errors, patiently

    run_input = {"approve": approve, "approver": args.approver, "comment": args.comment}

    def resume() -> tuple[str, str]:
        with api_errors(
            f"resuming flow run {args.flow_run}",
            not_found=f"there is no flow run {args.flow_run}; see bascule pending",
        ):
            return prefect.resume(args.flow_run, run_input)

    with _prefect() as prefect:
        status, reason = patiently(resume, DEFAULT_API_PATIENCE)
    if status == "ACCEPT":
        word = "approved" if approve else "rejected"
        print(f"{args.flow_run}: {word} by {args.approver}")
        return int(Exit.COMPLETED)
    message = (
        f"{args.flow_run} not resumed ({status}): {reason or 'no reason given'}; "
        "the run is unchanged"
    )
    # ABORT: the run cannot be resumed (not paused any more); REJECT: the input was refused.
    raise OperationFailed(message) if status == "ABORT" else UsageError(message)


def approve(args: argparse.Namespace) -> int:
    return decide(args, True)


def reject(args: argparse.Namespace) -> int:
    return decide(args, False)
