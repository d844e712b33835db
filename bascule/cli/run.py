"""``bascule deploy | rollback``: run the flow in this process and exit with its outcome.

Bad input (configuration, image, kubeconfig) is refused here, before a flow run exists or
anything changes; the flows are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bascule.cli import verdict
from bascule.cli.options import (
    INTERACTIVE_API_PATIENCE,
    add_api_patience_argument,
    add_app_argument,
    add_dir_argument,
    patiently,
    resolve_app,
)
from bascule.errors import Unreachable, UsageError
from bascule.markdown import one_line
from bascule.outcome import Exit, exit_code
from bascule.trigger.options import DEFAULT_API_PATIENCE
from bascule.workpool import HEARTBEAT_SECONDS

if TYPE_CHECKING:
    from prefect import State

    from bascule.config import EnvironmentConfig


def finish(state: State) -> int:
    """Prints the run's final state on one line, the command's verdict (the run's log above
    it has the whole message), and returns its exit code."""
    verdict(f"{state.name}: {one_line(state.message or '')}", failed=not state.is_completed())
    code = exit_code(state.type.value, state.name)
    return Exit.FAILED if code is None else code


def _checked(args: argparse.Namespace, secrets: bool = False) -> EnvironmentConfig:
    """The environment's configuration, with its templates and kubeconfig checked too (no
    request is made, but for Kubernetes Secret sources with ``secrets``): a UsageError naming
    the file and what to fix if one is wrong, or each required secret without a value."""
    from bascule.tasks.context import Env
    from bascule.tasks.secretref import resolve_all

    env = Env.open(args.environment, args.dir, resolve_app(args))
    try:
        if secrets:
            resolve_all(env)
    finally:
        env.kube.close()
    return env.cfg


def _check_prefect(patience: float) -> None:
    """A Prefect API that does not answer within ``patience`` is found before a run starts;
    the flow engine would end in a bare RuntimeError."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url  # PREFECT_API_URL, or the profile's
    if not url:
        return  # Prefect runs a temporary server of its own in this process

    def healthy() -> None:
        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
        if error is not None:
            raise Unreachable(
                f"the Prefect API at {url} did not answer ({type(error).__name__}: {error}) — "
                "is the Prefect server up, and PREFECT_API_URL right?"
            )

    patiently(healthy, patience)


def run_watched(environment: str, app: str, flow: Callable[..., State], **parameters: Any) -> State:
    """Runs ``flow`` for ``app`` in this process as the recover automations of prefect.yaml
    watch a deployment's run: tagged with its environment (and app) and sending heartbeats, so
    that if this process dies in flight, the heartbeat trigger starts ``recover/<environment>``."""
    from prefect import tags

    with tags("bascule", environment, f"app:{app}"):
        return flow(environment=environment, app=app, **parameters, return_state=True)


def _beating() -> None:
    """Heartbeats on unless set otherwise; Prefect reads its settings when first imported."""
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))


def _commit_time(value: str) -> str:
    from bascule.monitoring import normal_time

    try:
        return normal_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def deploy_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    add_app_argument(parser)
    parser.add_argument("--image", help="image reference (default: the environment's image)")
    parser.add_argument(
        "--commit",
        help="commit the image was built from: recorded, and where approval.four_eyes is "
        "set, its author and signer may not approve",
    )
    parser.add_argument(
        "--commit-time",
        type=_commit_time,
        metavar="TIME",
        help="when that commit was made (ISO-8601, e.g. from `git show -s --format=%%cI`): "
        "gives the lead time from commit to live (metrics, bascule stats)",
    )
    parser.add_argument(
        "--redeploy",
        action="store_true",
        help="run the whole cycle even when the image already serves (default: say so, "
        "change nothing)",
    )
    add_api_patience_argument(parser)


def deploy(args: argparse.Namespace) -> int:
    _beating()
    from bascule.flows.deploy import deploy as deploy_flow

    _checked(args).resolve_image(args.image)
    _check_prefect(args.api_patience)
    _checked(args, secrets=True)  # Prefect Secret blocks need the API
    return finish(
        run_watched(
            args.environment,
            args.app,
            deploy_flow,
            image=args.image,
            commit=args.commit,
            commit_time=args.commit_time,
            config_dir=str(args.dir),
            redeploy=args.redeploy,
        )
    )


def promote_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("source", metavar="SRC", help="environment it passed, e.g. staging")
    parser.add_argument("environment", metavar="DST", help="environment to deploy to")
    add_app_argument(parser)
    parser.add_argument(
        "--trigger",
        action="store_true",
        help="start it on the Prefect server (deployment deploy/DST) and follow it, as "
        "`bascule trigger` does, instead of running the flow here",
    )
    add_api_patience_argument(
        parser,
        None,
        f"{INTERACTIVE_API_PATIENCE:g}; with --trigger, bascule trigger's {DEFAULT_API_PATIENCE:g}",
    )
    parser.epilog = (
        "Deploys SRC's serving release pinned to the digest its pods ran\n"
        "(repository[:tag]@sha256:…), with its commit. Reads SRC's active Service and\n"
        "history with SRC's configuration; DST's deploy flow checks the digest again when\n"
        "DST has promote_from:."
    )


def promote(args: argparse.Namespace) -> int:
    _beating()
    from bascule.cli.inspect import reading
    from bascule.tasks.promotion import serving_image

    cfg = _checked(args)
    if cfg.promote_from not in (None, args.source):
        raise UsageError(
            f"{args.environment} takes only what {cfg.promote_from} verified (promote_from: in "
            f"its file) — `bascule promote {cfg.promote_from} {args.environment}`"
        )
    with reading(args.source, args.dir, args.app) as source:
        image, release = serving_image(source)
    print(f"promoting {image} (release {release.id} in {args.source}) to {args.environment}")
    if args.trigger:
        from bascule.trigger import add_arguments, options_from
        from bascule.trigger.start import trigger

        # Exactly what `bascule trigger DST --image ... --commit ...` would do.
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        commit = ["--commit", release.commit] if release.commit else []
        when = ["--commit-time", release.commit_time] if release.commit_time else []
        app = ["--app", args.app]
        patience = [] if args.api_patience is None else ["--api-patience", str(args.api_patience)]
        given = parser.parse_args(
            [args.environment, *app, "--image", image, *commit, *when, *patience]
        )
        return int(trigger(options_from(given, os.environ)))
    from bascule.flows.deploy import deploy as deploy_flow

    _check_prefect(INTERACTIVE_API_PATIENCE if args.api_patience is None else args.api_patience)
    _checked(args, secrets=True)
    return finish(
        run_watched(
            args.environment,
            args.app,
            deploy_flow,
            image=image,
            commit=release.commit,
            commit_time=release.commit_time,
            config_dir=str(args.dir),
        )
    )


def rollback_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    add_app_argument(parser)
    parser.add_argument(
        "--to",
        dest="to_release",
        metavar="RELEASE",
        help="release id to return to: one that succeeded in ENV (`bascule history ENV`); a "
        "failed, rejected or unfinished one is refused (default: the previous good release)",
    )
    parser.add_argument(
        "--break-lock",
        metavar="REASON",
        help="take the deploy lock from a run that still holds it (it is stopped as if "
        "killed); who and REASON go into the history. Not needed after a crash: a dead "
        "run's lock is taken over within 15 s",
    )
    add_api_patience_argument(parser)


def breaker(reason: str | None) -> str | None:
    """Who breaks the lock, and why, as the history records it."""
    if reason is None:
        return None
    if not reason.strip():
        raise UsageError(
            "--break-lock needs a reason, e.g. --break-lock 'deploy stuck in approval'"
        )
    return f"by {requester()}, because: {reason.strip()}"


def requester() -> str:
    """Who runs this command, for the history: the GitHub actor in CI, else the login."""
    return os.environ.get("GITHUB_ACTOR") or getpass.getuser()


def rollback(args: argparse.Namespace) -> int:
    _beating()
    from bascule.flows.rollback import rollback as rollback_flow

    _checked(args)  # no image: a rollback deploys one from the history
    breaking = breaker(args.break_lock)
    _check_prefect(args.api_patience)
    return finish(
        run_watched(
            args.environment,
            args.app,
            rollback_flow,
            to_release=args.to_release,
            config_dir=str(args.dir),
            break_lock=breaking,
        )
    )
