"""The ``bascule`` command: a thin entry for people and CI; the flows do the work.

Each subcommand is one ``Command`` in ``COMMANDS``: a name, a one-line help, a function adding
its arguments and a function running it that returns the exit status. To add one, write those
two functions and add a ``Command`` to the table. Run functions import what they need
themselves, so that a quick command like ``validate`` does not pay for loading Prefect.

Exit statuses: 0 success, 1 the operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bascule import __version__

if TYPE_CHECKING:
    from bascule.config import EnvironmentConfig
    from bascule.yamlsource import Problem

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_DEPLOYMENTS_DIR = Path("deployments")


@dataclass(frozen=True)
class Command:
    """One subcommand of ``bascule``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--dir``: the deployments directory; shared by every command that reads configuration."""
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DEPLOYMENTS_DIR,
        metavar="DIR",
        help="deployments directory with one YAML file per environment (default: %(default)s)",
    )


# --- validate -----------------------------------------------------------------------------------


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print every configuration key with its default and meaning, and exit",
    )
    parser.add_argument(
        "environments",
        nargs="*",
        metavar="ENV",
        help="environments to check (default: all; dev, staging and production must exist)",
    )


def _validate(args: argparse.Namespace) -> int:
    from bascule.config import (
        ConfigError,
        describe_schema,
        environment_files,
        load_all,
        load_environment,
    )
    from bascule.yamlsource import display_path

    out = sys.stdout
    if args.schema:
        out.writelines(f"{line}\n" for line in describe_schema())
        return EXIT_OK
    directory: Path = args.dir
    names: list[str] = args.environments
    problems: list[Problem] = []
    configs: dict[str, EnvironmentConfig] = {}
    if names:
        paths = [directory / f"{name}.yaml" for name in names]
        for path in paths:
            try:
                configs[path.stem] = load_environment(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
    else:
        paths = list(environment_files(directory).values())
        try:
            configs = load_all(directory)
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_template_problems(configs.values()))

    files = [display_path(path) for path in paths]
    files += [p.file for p in problems if p.file not in files]
    for file in dict.fromkeys(files):
        mine = [p for p in problems if p.file == file]
        if not mine:
            out.write(f"{file}: OK\n")
        out.writelines(f"{problem}\n" for problem in mine)
    bad = len({p.file for p in problems})
    if bad:
        out.write(f"{bad} file(s) with problems; nothing was changed\n")
        return EXIT_USAGE
    return EXIT_OK


def _template_problems(configs: Iterable[EnvironmentConfig]) -> list[Problem]:
    """Load and render each environment's templates once, so a template that cannot work is
    found now and not in the middle of a deploy."""
    from bascule.config import ConfigError
    from bascule.manifests import load_templates, render_deployment, render_service

    problems: list[Problem] = []
    seen: set[Path] = set()
    for cfg in configs:
        if cfg.manifests in seen:
            continue
        seen.add(cfg.manifests)
        try:
            templates = load_templates(cfg.manifests)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        image = cfg.image or "registry.example/app:v1"
        render_deployment(cfg, templates, color="blue", image=image, release_id="validate")
        render_service(cfg, templates, role="active", color="blue")
    return problems


VALIDATE = Command(
    name="validate",
    help="check the environment files and manifests; prints file:line: field: problem",
    add_arguments=_validate_arguments,
    run=_validate,
)


# The subcommands, in the order `bascule --help` lists them.
def _operations() -> tuple[Command, ...]:
    from bascule import approvals as a
    from bascule import commands as c
    from bascule import trigger

    def table(name: str, help_: str, add: Callable[..., None], run: Callable[..., int]) -> Command:
        return Command(name, help_, add, c.main_guard(run))

    return (
        table(
            "deploy",
            "deploy a release blue-green (runs the flow here)",
            c.deploy_arguments,
            c.deploy,
        ),
        table("rollback", "return to the previous good release", c.rollback_arguments, c.rollback),
        table("status", "active color and image per environment", c.status_arguments, c.status),
        table("history", "the last releases of an environment", c.history_arguments, c.history),
        Command(
            "trigger",
            "start a deploy on a Prefect server and follow it (for CI)",
            trigger.add_arguments,
            trigger.run,
        ),
        Command("pending", "runs waiting for an approval", a.pending_arguments, a.pending),
        Command(
            "approve", "approve a paused deploy: traffic switches", a.decision_arguments, a.approve
        ),
        Command(
            "reject", "reject a paused deploy: nothing switches", a.decision_arguments, a.reject
        ),
    )


COMMANDS: tuple[Command, ...] = (VALIDATE, *_operations())


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bascule",
        description="Blue-green deployments to Kubernetes, run as Prefect flows.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bascule`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        print("bascule: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
