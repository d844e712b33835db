"""``bascule pending | approve RUN | reject RUN``: answering an approval gate without the UI.

Prefect has no resume command; these call the REST resume endpoint with the same input
the UI's form sends, and read the orchestration status in the answer (ACCEPT, REJECT or
ABORT), because the HTTP code alone is 200 either way.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from bascule.prefect_api import APIUnreachable, PrefectAPI, PrefectAPIError

T = TypeVar("T")
PATIENCE_S = 60.0  # a busy SQLite server answers 503 for a moment; that is no answer yet


def patiently(call: Callable[[], T], patience: float = PATIENCE_S) -> T:
    """``call()``, retried while the API is unreachable or overloaded, up to ``patience``."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except APIUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 7


def api_from_env() -> PrefectAPI:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise SystemExit("bascule: PREFECT_API_URL is not set (e.g. http://127.0.0.1:4200/api)")
    return PrefectAPI(
        url,
        api_key=os.environ.get("PREFECT_API_KEY"),
        auth_string=os.environ.get("PREFECT_API_AUTH_STRING"),
    )


def pending_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", default=None, help="only runs of this flow (e.g. deploy)")


def pending(args: argparse.Namespace) -> int:
    try:
        with api_from_env() as api:
            runs = patiently(lambda: api.paused_flow_runs(args.flow))
    except PrefectAPIError as exc:
        print(f"bascule: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not runs:
        print("no run is waiting for approval")
    for run in runs:
        params = run.parameters
        print(f"{run.id}  {run.name}  env={params.get('environment')} image={params.get('image')}")
    return EXIT_OK


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
    run_input = {"approve": approve, "approver": args.approver, "comment": args.comment}
    try:
        with api_from_env() as api:
            status, reason = patiently(lambda: api.resume(args.flow_run, run_input))
    except PrefectAPIError as exc:
        print(f"bascule: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    word = "approved" if approve else "rejected"
    if status == "ACCEPT":
        print(f"{args.flow_run}: {word} by {args.approver}")
        return EXIT_OK
    print(
        f"bascule: {args.flow_run} not resumed ({status}): {reason or 'no reason given'}; "
        "the run is unchanged",
        file=sys.stderr,
    )
    return EXIT_REFUSED if status == "ABORT" else EXIT_USAGE


def approve(args: argparse.Namespace) -> int:
    return decide(args, True)


def reject(args: argparse.Namespace) -> int:
    return decide(args, False)
