"""``bascule pending | approve RUN | reject RUN``: answering an approval gate without the UI.

Prefect has no resume command; these resume the run through Prefect's client with the same
input the UI's form sends, and read the orchestration status in the answer (ACCEPT, REJECT or
ABORT), because the HTTP code alone is 200 either way. Prefect is imported when a command
runs, not when the CLI builds its parser.

Expected failures raise ``bascule.errors`` (the CLI prints them and exits with their code):
PREFECT_API_URL unset, no such run or input refused (2), the Prefect API unreachable for
longer than ``--api-patience`` (7).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from bascule.cli.options import (
    add_api_patience_argument,
    add_json_argument,
    patiently,
    print_json,
)
from bascule.errors import OperationFailed, UsageError
from bascule.outcome import Exit
from bascule.signoff import DEFAULT_KEY, PREVIEW_KEY, REQUEST_KEY, Request

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
    add_json_argument(parser, "the runs")
    add_api_patience_argument(parser)


def pending(args: argparse.Namespace) -> int:
    from bascule.prefect_client import api_errors

    def read() -> list[FlowRun]:
        with api_errors("reading paused flow runs"):
            return prefect.paused_flow_runs(args.flow)

    def waiting(run: FlowRun) -> dict[str, Any]:
        with api_errors("reading the preview link"):
            preview = prefect.run_input(run.id, PREVIEW_KEY)
        params = run.parameters
        found: dict[str, Any] = {
            "id": str(run.id),
            "name": run.name,
            "environment": params.get("environment"),
            # None: the environment file's own app (the run names none).
            "app": params.get("app") or None,
            "image": params.get("image"),
            "preview": preview if isinstance(preview, str) else None,
        }
        if args.details:
            with api_errors("reading the approval form"):
                found["form"] = prefect.approval_text(run)
        return found

    with _prefect() as prefect:
        runs = [
            patiently(partial(waiting, run), args.api_patience)
            for run in patiently(read, args.api_patience)
        ]
    if args.json:
        print_json(runs)
        return int(Exit.COMPLETED)
    if not runs:
        print("no run is waiting for approval")
    for run in runs:
        link = f"  preview={run['preview']}" if run["preview"] else ""
        app = f" app={run['app']}" if run["app"] else ""
        print(
            f"{run['id']}  {run['name']}  env={run['environment']}{app} image={run['image']}{link}"
        )
        if args.details:
            text = run["form"] or "(no form)"
            print("\n".join("    " + line for line in text.splitlines()))
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
    add_api_patience_argument(parser)


def approve_arguments(parser: argparse.ArgumentParser) -> None:
    decision_arguments(parser)
    parser.add_argument(
        "--key",
        type=Path,
        default=None,
        help=(
            "sign the approval with this SSH key (ssh-keygen -Y sign), as environments with "
            "approval.allowed_signers require; the history then records the key's principal "
            "from that file instead of --as"
        ),
    )


def decide(args: argparse.Namespace, approve: bool) -> int:
    from bascule.prefect_client import api_errors

    run_input = {"approve": approve, "approver": args.approver, "comment": args.comment}
    key: Path | None = getattr(args, "key", None)
    not_found = f"there is no flow run {args.flow_run}; see bascule pending"

    def asked() -> Any:
        with api_errors(f"reading flow run {args.flow_run}", not_found=not_found):
            return prefect.run_input(args.flow_run, REQUEST_KEY)

    def resume() -> tuple[str, str]:
        with api_errors(f"resuming flow run {args.flow_run}", not_found=not_found):
            return prefect.resume(args.flow_run, run_input)

    with _prefect() as prefect:
        if approve:
            request = patiently(asked, args.api_patience)
            if request is not None or key is not None:
                run_input["signature"] = signature(args.flow_run, request, key)
        status, reason = patiently(resume, args.api_patience)
    if status == "ACCEPT" and approve and key:
        # Only the run can tell whether the signature counts, and whether it needs more.
        print(
            f"{args.flow_run}: approval signed with the key {key} sent; the run checks it and, "
            "if it does not count or needs more approvers, pauses again with why "
            "(bascule pending --details)"
        )
        return int(Exit.COMPLETED)
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


def signature(run: UUID, asked: Any, key: Path | None) -> str:
    """The signature of what ``run`` asks to be approved. The run id is the one typed here,
    never one read from the server: whoever can write the run's inputs cannot make this sign
    an approval of another run."""
    from bascule.sshsig import sign

    if key is None:
        raise UsageError(
            f"{run} takes signed approvals only: give --key with your SSH key "
            f"(e.g. --key {DEFAULT_KEY}); nothing was sent"
        )
    if not isinstance(asked, dict):
        raise UsageError(
            f"{run} does not take signed approvals (its environment has no "
            "approval.allowed_signers): approve without --key"
        )
    try:
        request = Request(**{**asked, "run": str(run)})
    except TypeError:
        raise UsageError(
            f"{run}: the approval request it saved is not one this bascule knows"
        ) from None
    print(f"signing with {key}: {request.message()}", file=sys.stderr)
    return sign(request, key)
