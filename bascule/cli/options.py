"""Arguments shared by several commands, and the one way a command prints JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bascule.apps import choose_app
from bascule.config import DEFAULT_CONFIG_DIR
from bascule.config_files import app_names

T = TypeVar("T")


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--dir``: the deployments directory; every command that reads configuration has it."""
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_CONFIG_DIR,
        metavar="DIR",
        help="deployments directory with one YAML file per environment (default: %(default)s)",
    )


def add_app_argument(parser: argparse.ArgumentParser) -> None:
    """``--app``: which app of the environment; needed only where it has several."""
    parser.add_argument(
        "--app",
        metavar="NAME",
        help="the app of the environment (default: its only one; its file's `app:` and "
        "apps/<app>/<env>.yaml name them)",
    )


def resolve_app(args: argparse.Namespace, environment: str | None = None) -> str:
    """The app the command acts on (``args.app`` checked, or the environment's only one),
    stored back in ``args.app``; UsageError listing the apps when that is ambiguous."""
    env = environment or args.environment
    app: str = choose_app(env, args.app, app_names(args.dir, env))
    args.app = app
    return app


def add_json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: ``what`` as one JSON document on stdout, for scripts (``print_json``)."""
    parser.add_argument(
        "--json", action="store_true", help=f"print {what} as JSON (README: JSON output)"
    )


def print_json(data: Any) -> None:
    """``data`` as the one JSON document of a command's stdout: indented, keys in the order
    the command gives them, non-ASCII text as it is."""
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


# A person at a terminal: a Prefect API that refuses the connection is said within seconds,
# not after the minute a CI job waits out a restarting server (bascule trigger's default).
INTERACTIVE_API_PATIENCE = 5.0


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"give 0 or more seconds, not {value}")
    return seconds


def add_api_patience_argument(
    parser: argparse.ArgumentParser,
    default: float | None = INTERACTIVE_API_PATIENCE,
    shown: str = "%(default)g",
) -> None:
    """``--api-patience``: how long a command that talks to the Prefect API tries again while
    it does not answer; every such command has this one flag. ``default`` None: the command
    picks, and ``shown`` says what."""
    parser.add_argument(
        "--api-patience",
        type=_seconds,
        default=default,
        metavar="SECONDS",
        help="how long the Prefect API may not answer (connection refused, time-out, 5xx) "
        f"before giving up with exit 7; 0: one try (default: {shown})",
    )


def patiently(call: Callable[[], T], patience: float) -> T:
    """``call()`` (a Prefect API call), tried again for up to ``patience`` seconds while the API
    does not answer (``bascule.prefect_client.patiently``), saying once on stderr that it
    waits, so a person does not stare at a silent prompt."""
    from bascule.prefect_client import patiently as retried

    said: list[Exception] = []

    def waiting(problem: Exception) -> None:
        if not said:
            print(
                f"bascule: the Prefect API does not answer ({problem}); trying again for up "
                f"to {patience:g}s (--api-patience)",
                file=sys.stderr,
            )
            said.append(problem)

    return retried(call, patience, on_retry=waiting)
