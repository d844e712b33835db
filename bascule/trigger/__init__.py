"""``bascule trigger ENV --image REF``: start the deploy flow of one environment and follow it
(``--rollback``: its rollback flow).

This is what the GitHub workflows run. It creates a flow run of the Prefect deployment
``deploy/ENV`` (or ``--deployment FLOW/NAME``) through Prefect's REST API (PREFECT_API_URL;
PREFECT_API_KEY for Prefect Cloud or PREFECT_API_AUTH_STRING for a self-hosted server with
basic auth), with the parameters ``environment``, ``image`` and ``commit``, then prints the
run's state changes and logs until it ends and exits with a code that says how it ended
(``bascule.outcome``; the CLI table lists the ones this command can return in its --help,
after the environment variables).

The run is created with an idempotency key made of environment, commit and image: triggering
the same inputs again (a re-run job, a retry after a network error) follows the run that
already exists instead of deploying twice. ``--rerun LABEL`` adds a label to the key, for
deploying the same commit and image again on purpose (for example after a rollback).

A run paused at the approval gate waits for a person in the Prefect UI; that is not an error,
and the trigger keeps waiting until ``--timeout``.

With GITHUB_STEP_SUMMARY set (or ``--summary PATH``) a markdown summary of the run is appended
to that file: environment, image, result, timings and a link to the run in the Prefect UI.
With GITHUB_OUTPUT set, the step gets the outputs ``result``, ``exit-code``, ``flow-run-id``
and ``flow-run-url``.

The parts: ``options`` (what to do, checked before any call), ``start`` (find the deployment,
create the run), ``follow`` (its states and logs), ``github`` (masked output, summary, step
outputs). This module is the command line; Prefect's client is imported only once the run
exists, to follow it (``start``).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from bascule.cli.options import add_api_patience_argument
from bascule.config import DEFAULT_CONFIG_DIR
from bascule.trigger.options import (
    DEFAULT_API_PATIENCE,
    DEFAULT_WAIT_TIMEOUT,
    Options,
    app_secret_values,
    local_app,
)

__all__ = ["ENVIRONMENT_HELP", "add_arguments", "options_from", "run"]

ENVIRONMENT_HELP = """\
environment (the PREFECT_ ones may also come from the active Prefect profile):
  PREFECT_API_URL          the Prefect API, e.g. http://127.0.0.1:4200/api (required)
  PREFECT_API_KEY          bearer token (Prefect Cloud)
  PREFECT_API_AUTH_STRING  user:password for a self-hosted server with basic auth
  PREFECT_UI_URL           the UI, for links (default: the API URL without /api)
  GITHUB_STEP_SUMMARY      a job summary is appended to this file when set
  GITHUB_OUTPUT            step outputs result, exit-code, flow-run-id, flow-run-url
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``bascule trigger``; its epilog lists the environment variables."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ENVIRONMENT_HELP
    parser.add_argument("environment", metavar="ENV", help="environment, e.g. staging")
    parser.add_argument(
        "--app",
        metavar="NAME",
        help="the app of the environment, passed to the flow as its `app` parameter "
        "(default: the environment's only one)",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--image",
        metavar="REF",
        help="image reference to deploy, e.g. registry.example/app@sha256:<hex>",
    )
    what.add_argument(
        "--rollback",
        action="store_true",
        help="start the environment's rollback (rollback/ENV) instead, back to the previous "
        "good release or to --to RELEASE, and follow it",
    )
    parser.add_argument(
        "--to",
        dest="to_release",
        metavar="RELEASE",
        help="with --rollback: the release id to return to (`bascule history ENV`)",
    )
    parser.add_argument(
        "--commit", metavar="SHA", help="commit being deployed; part of the idempotency key"
    )
    parser.add_argument(
        "--commit-time",
        metavar="TIME",
        help="when that commit was made (ISO-8601, `git show -s --format=%%cI`): the lead "
        "time from commit to live in the metrics and bascule stats",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="stop waiting after this long (exit 6; the run goes on); "
        "0: no limit (default: %(default).0f)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start the run, print its URL and exit 0 without following it",
    )
    parser.add_argument(
        "--require-digest",
        action="store_true",
        help="refuse an image reference without @sha256:<digest>",
    )
    parser.add_argument(
        "--rerun",
        metavar="LABEL",
        help="deploy the same commit and image again: a new label gives a new "
        "run, the same label the same run",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the arguments and find the deployment; start nothing",
    )
    add_api_patience_argument(parser, DEFAULT_API_PATIENCE)
    parser.add_argument(
        "--deployment",
        metavar="FLOW/NAME",
        help="the Prefect deployment to start (default: deploy/ENV), e.g. "
        "deploy/ENV-kubernetes; its worker still decides what the run may do",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="PATH",
        help="append a markdown summary here (default: $GITHUB_STEP_SUMMARY)",
    )


def options_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Options:
    """The trigger's options from parsed arguments and the GitHub Actions environment; the
    Prefect settings as Prefect reads them (without importing Prefect where it can)."""
    from bascule.prefect_api import ApiSettings

    summary: Path | None = args.summary
    app = local_app(args.environment, args.app, DEFAULT_CONFIG_DIR)
    if summary is None and environ.get("GITHUB_STEP_SUMMARY"):
        summary = Path(environ["GITHUB_STEP_SUMMARY"])
    return Options(
        environment=args.environment,
        image=args.image,
        api=ApiSettings.read(),
        commit=args.commit,
        commit_time=args.commit_time,
        rerun=args.rerun,
        require_digest=args.require_digest,
        wait=not args.no_wait,
        check_only=args.check,
        wait_timeout=args.timeout or None,
        api_patience=args.api_patience,
        summary_path=summary,
        outputs_path=Path(environ["GITHUB_OUTPUT"]) if environ.get("GITHUB_OUTPUT") else None,
        github_actions=environ.get("GITHUB_ACTIONS") == "true",
        app_secrets=app_secret_values(args.environment, environ, DEFAULT_CONFIG_DIR, app),
        app=app,
        deployment=args.deployment,
        rollback=args.rollback,
        to_release=args.to_release,
        nonce=uuid.uuid4().hex,
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``bascule trigger`` with parsed arguments; returns its exit code."""
    without_httpx_cli()
    from bascule.trigger.start import trigger

    return int(trigger(options_from(args, os.environ)))


def without_httpx_cli() -> None:
    """httpx imports its own command line (rich, click, pygments) with itself, where it can:
    ~50 ms of the trigger's start on the 2-core test machine (python -X importtime), before
    its run exists. Nothing in this process runs httpx's command line, so that module is
    marked as one that cannot be imported (httpx then defines a stand-in); idempotent, and
    nothing once httpx is imported. Call it before anything imports httpx."""
    # None in sys.modules: the import system's own mark of a module that cannot be imported.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
