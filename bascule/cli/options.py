"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from bascule.apps import choose_app
from bascule.config import DEFAULT_CONFIG_DIR
from bascule.config_files import app_names


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
