"""``bascule deploy | rollback | status | history``: thin entries for people and CI. The
flows do the work; these start them in this process and print what the cluster says."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_CODES = """exit codes: 0 completed, 1 failed, 2 usage or configuration error,
3 rolled back, 4 rejected, 5 approval timed out"""


def _dir(parser: argparse.ArgumentParser) -> None:
    from bascule.cli import add_dir_argument

    add_dir_argument(parser)


def _exit_for(state: Any) -> int:
    from bascule.outcome import Exit
    from bascule.outcome import exit_code as exit_code_for_state

    if state.name == "LockHeld":  # refused before doing anything, like a usage error
        return int(Exit.USAGE)
    code = exit_code_for_state(state.type.value, state.name)
    return int(code if code is not None else Exit.FAILED)


def _finish(state: Any) -> int:
    print(f"{state.name}: {state.message}", file=sys.stdout if state.is_completed() else sys.stderr)
    return _exit_for(state)


def deploy_arguments(parser: argparse.ArgumentParser) -> None:
    _dir(parser)
    parser.add_argument("environment", metavar="ENV")
    parser.add_argument("--image", help="image reference (default: the environment's image)")
    parser.add_argument("--commit", help="commit the image was built from, for the record")
    parser.epilog = EXIT_CODES


def _check_config(args: argparse.Namespace) -> None:
    """Bad configuration stops here, before any flow run exists or anything changes."""
    from bascule.config import load_environment

    load_environment(args.dir / f"{args.environment}.yaml").resolve_image(
        getattr(args, "image", None)
    )


def deploy(args: argparse.Namespace) -> int:
    from flows.deploy import deploy as deploy_flow

    _check_config(args)
    state = deploy_flow(
        environment=args.environment,
        image=args.image,
        commit=args.commit,
        config_dir=str(args.dir),
        return_state=True,
    )
    return _finish(state)


def rollback_arguments(parser: argparse.ArgumentParser) -> None:
    _dir(parser)
    parser.add_argument("environment", metavar="ENV")
    parser.add_argument(
        "--to",
        dest="to_release",
        metavar="RELEASE",
        help="release id to return to (default: the previous good release)",
    )
    parser.epilog = EXIT_CODES


def rollback(args: argparse.Namespace) -> int:
    from flows.rollback import rollback as rollback_flow

    _check_config(args)
    state = rollback_flow(
        environment=args.environment,
        to_release=args.to_release,
        config_dir=str(args.dir),
        return_state=True,
    )
    return _finish(state)


def status_arguments(parser: argparse.ArgumentParser) -> None:
    _dir(parser)
    parser.add_argument("environments", nargs="*", metavar="ENV")


def status(args: argparse.Namespace) -> int:
    from bascule.config import ENVIRONMENTS
    from tasks.context import Env
    from tasks.state import observe

    for name in args.environments or ENVIRONMENTS:
        env = Env.open(name, args.dir)
        obs = observe(env)
        active = obs.active_state
        print(f"{name} ({env.ns}): ", end="")
        if active is None:
            print("nothing deployed yet")
        else:
            print(
                f"{active.color} serving {active.image} ({active.ready}/{active.replicas} "
                f"ready, release {active.release})"
            )
        for c in obs.colors.values():
            if c.color != obs.active and c.replicas:
                print(f"  idle {c.color}: {c.image} ({c.ready}/{c.replicas} ready)")
        if obs.in_flight:
            print(f"  in flight: {obs.in_flight.id} ({obs.in_flight.phase})")
    return 0


def history_arguments(parser: argparse.ArgumentParser) -> None:
    _dir(parser)
    parser.add_argument("environment", metavar="ENV")
    parser.add_argument("--limit", type=int, default=10)


def history(args: argparse.Namespace) -> int:
    from tasks.context import Env
    from tasks.state import read_history

    releases, _ = read_history(Env.open(args.environment, args.dir))
    print(
        f"{'release':<24} {'kind':<8} {'result':<12} {'color':<6} {'seconds':>7}  "
        f"{'approver':<12} image / reason"
    )
    for r in list(reversed(releases))[: args.limit]:
        total = sum(s.seconds for s in r.steps)
        print(
            f"{r.id:<24} {r.kind:<8} {r.result:<12} {r.color:<6} {total:7.1f}  "
            f"{(r.approver or '-'):<12} {r.image}" + (f" — {r.reason}" if r.reason else "")
        )
    return 0


def main_guard(fn: Any) -> Any:
    """Configuration errors and refused locks end with a message and code 2, not a trace."""

    def run(args: argparse.Namespace) -> int:
        from bascule.config import ConfigError
        from tasks.lock import LockHeld

        try:
            return int(fn(args))
        except (ConfigError, LockHeld) as exc:
            print(f"bascule: {exc}", file=sys.stderr)
            return 2

    return run
