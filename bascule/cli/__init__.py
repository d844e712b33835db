"""The ``bascule`` command: a thin entry for people and CI; the flows do the work.

Each subcommand is one ``Command`` in ``COMMANDS``: a name, a one-line help, the module and
names of the two functions that add its arguments and run it, and the exit codes it can
return. Only the command being run is imported, so a quick one like ``validate`` does not pay
for importing Prefect. To add a command, write its two functions and add a row to the table.

Expected failures are ``BasculeError``s: ``main`` turns each into its message on stderr (the
process's known secrets masked) and its exit code, in this one place; anything else is a bug
and keeps its traceback. The exit codes themselves, and what they mean, are
``bascule.outcome``'s, and so is the prefix of every failure's message (``error_line``), which
``verdict`` and argparse's usage errors (``Parser``) print too. A command's last line, its
verdict, is printed by ``verdict``: after Prefect's background services have had their say.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from bascule.errors import BasculeError, LockLost
from bascule.outcome import Exit, describe_exits, error_line
from bascule.redact import redact

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# How long a verdict waits for Prefect's background services to send what they hold.
SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class Command:
    """One subcommand of ``bascule``: ``module`` holds its two functions, ``add_arguments``
    and ``run`` (names in it), imported only when the command is used."""

    name: str
    help: str
    module: str
    add_arguments: str
    run: str
    exits: tuple[Exit, ...]

    def load(self) -> tuple[AddArguments, Run]:
        module = importlib.import_module(self.module)
        return getattr(module, self.add_arguments), getattr(module, self.run)


# Every command can finish, refuse bad arguments (argparse exits 2 too) and be interrupted.
_ALWAYS = (Exit.COMPLETED, Exit.USAGE, Exit.INTERRUPTED)
_DEPLOYS = (Exit.FAILED, Exit.ROLLED_BACK, Exit.UNREACHABLE)
_GATE = (Exit.REJECTED, Exit.APPROVAL_TIMED_OUT)
_READS = (Exit.FAILED, Exit.UNREACHABLE)
_CLI = "bascule.cli"

# The subcommands, in the order `bascule --help` lists them.
COMMANDS: tuple[Command, ...] = (
    Command(
        "validate",
        "check the environment files and manifests; prints file:line: field: problem",
        f"{_CLI}.validate",
        "add_arguments",
        "run",
        _ALWAYS,
    ),
    Command(
        "deploy",
        "deploy a release blue-green (runs the flow here)",
        f"{_CLI}.run",
        "deploy_arguments",
        "deploy",
        (*_ALWAYS, *_DEPLOYS, *_GATE),
    ),
    Command(
        "promote",
        "deploy to an environment exactly the digest another one serves (runs the flow here)",
        f"{_CLI}.run",
        "promote_arguments",
        "promote",
        (*_ALWAYS, *_DEPLOYS, *_GATE, Exit.WAIT_TIMED_OUT),
    ),
    # A rollback that has to redeploy goes through the whole pipeline, without approval.
    Command(
        "rollback",
        "return to the previous good release",
        f"{_CLI}.run",
        "rollback_arguments",
        "rollback",
        (*_ALWAYS, *_DEPLOYS),
    ),
    # `plan` always completes; `lint` fails (1) when a finding blocks the deploy.
    Command(
        "migrations",
        "plan or lint an environment's pending database migrations, without deploying",
        f"{_CLI}.migrations",
        "add_arguments",
        "run",
        (*_ALWAYS, Exit.FAILED),
    ),
    Command(
        "status",
        "active color and image per environment",
        f"{_CLI}.inspect",
        "status_arguments",
        "status",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "history",
        "the last releases of an environment",
        f"{_CLI}.inspect",
        "history_arguments",
        "history",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "secrets",
        "the secret variables of an environment: sources, and whether each resolves (masked)",
        f"{_CLI}.inspect",
        "secrets_arguments",
        "secrets",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "stats",
        "the four DORA figures of an environment, from its history",
        f"{_CLI}.inspect",
        "stats_arguments",
        "stats",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "rbac",
        "the ServiceAccount, Roles and bindings of an environment, filled in from its config",
        f"{_CLI}.access",
        "rbac_arguments",
        "rbac_command",
        _ALWAYS,
    ),
    Command(
        "kubeconfig",
        "a kubeconfig holding only a token of an environment's ServiceAccount",
        f"{_CLI}.access",
        "kubeconfig_arguments",
        "kubeconfig_command",
        (*_ALWAYS, Exit.UNREACHABLE),
    ),
    Command(
        "trigger",
        "start a deploy on a Prefect server and follow it (for CI)",
        "bascule.trigger",
        "add_arguments",
        "run",
        (*_ALWAYS, *_DEPLOYS, *_GATE, Exit.WAIT_TIMED_OUT),
    ),
    Command(
        "worker",
        "run one environment's flow runs from its work pool, under this machine's policy",
        f"{_CLI}.worker",
        "add_arguments",
        "run",
        _ALWAYS,
    ),
    Command(
        "register",
        "register the Prefect deployments of an app's environments (from Bascule's prefect.yaml)",
        f"{_CLI}.register",
        "add_arguments",
        "run",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "abort",
        "stop a deploy: before the switch the idle color goes to zero, after it traffic goes back",
        f"{_CLI}.abort",
        "add_arguments",
        "run",
        (*_ALWAYS, *_READS, Exit.WAIT_TIMED_OUT),
    ),
    Command(
        "pending",
        "runs waiting for an approval",
        "bascule.approvals",
        "pending_arguments",
        "pending",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "approve",
        "approve a paused deploy: traffic switches",
        "bascule.approvals",
        "approve_arguments",
        "approve",
        (*_ALWAYS, *_READS),
    ),
    Command(
        "reject",
        "reject a paused deploy: nothing switches",
        "bascule.approvals",
        "decision_arguments",
        "reject",
        (*_ALWAYS, *_READS),
    ),
)


class _Version(argparse._VersionAction):
    """``--version``: the version looked up only when asked for (``bascule.__version__``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from bascule import __version__

        self.version = f"%(prog)s {__version__}"
        super().__call__(parser, namespace, values, option_string)


class Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors worded as every other failure (exit 2 still)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("bascule").strip()  # "" for bascule's own
        self.exit(Exit.USAGE, error_line(f"{command}: {message}" if command else message) + "\n")


def build_parser(
    commands: Sequence[Command] = COMMANDS, only: str | None = None
) -> argparse.ArgumentParser:
    """The parser of ``bascule``. With ``only``, just the command of that name is loaded (its
    module imported, its arguments added); the others are listed with their one-line help,
    which is all ``bascule --help`` shows."""
    parser = Parser(
        prog="bascule",
        description="Blue-green deployments to Kubernetes, run as Prefect flows.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub_parser = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is not None and command.name != only:
            continue
        add_arguments, run = command.load()
        add_arguments(sub_parser)
        # After add_arguments, which may have set an epilog of its own (e.g. variables read).
        exits = describe_exits(command.exits)
        sub_parser.epilog = (
            f"{sub_parser.epilog.rstrip()}\n\n{exits}" if sub_parser.epilog else exits
        )
        sub_parser.set_defaults(run=run)
    return parser


def verdict(line: str, failed: bool = True) -> None:
    """Prints a command's last line (on stderr, after the error prefix, when it failed), once
    Prefect has had its say: its services sent what they held at interpreter exit, and what
    they said then came after this line ("EventsWorker - Still processing items: ...")."""
    if "prefect" in sys.modules:  # a command that never loaded Prefect started none of them
        _settle_prefect()
    print(error_line(line) if failed else line, file=sys.stderr if failed else sys.stdout)


def _settle_prefect() -> None:
    """Prefect's background services in this process (a run's logs and events, for the API)
    send what they hold, for up to SETTLE_SECONDS. What is unsent then (an API that does not
    answer) goes out at exit as before, but Prefect says nothing more."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    services = (APILogWorker, EventsWorker)
    # Each only warns of items still queued, on a logger named after its class.
    quiet = {service.__name__ for service in services}
    _disable_loggers(lambda name: name in quiet)
    for service in services:  # one drain_all stops them all: they share one registry
        drained = service.drain_all(timeout=SETTLE_SECONDS, at_exit=False)
        if isinstance(drained, tuple) and drained[1]:  # a tuple: called outside any loop
            # Prefect's internal loggers ignore logging.disable: each is disabled itself.
            _disable_loggers(lambda name: name.partition(".")[0] == "prefect")
            logging.raiseExceptions = False  # the API log worker prints its failures so
            return


def _disable_loggers(chosen: Callable[[str], bool]) -> None:
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and chosen(name):
            logger.disabled = True


def _command_named(argv: Sequence[str]) -> str | None:
    # `bascule` itself takes no option with a value: the first word is the command.
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bascule`` console script; returns the exit status."""
    args_in = sys.argv[1:] if argv is None else list(argv)
    # "" loads no command: `bascule --help` and `--version` need none.
    parser = build_parser(only=_command_named(args_in) or "")
    args = parser.parse_args(args_in)
    run: Run = args.run
    try:
        return int(run(args))
    except BasculeError as exc:
        verdict(redact(str(exc)))  # it may quote what a secret was sent to
        return int(exc.exit)
    except KeyboardInterrupt:
        verdict("interrupted")
        return int(Exit.INTERRUPTED)
    except LockLost:
        verdict(LockLost.said)
        return int(LockLost.exit)
