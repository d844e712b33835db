"""``bascule status | history | secrets | stats``: what the cluster says serves where, what
was deployed, where the secrets come from, and the DORA figures.

Read-only. A cluster that does not answer is an ``Unreachable`` error (exit 7) naming the
API server and what to check, not a traceback. With ``--json`` each prints one JSON document
instead of its table (``*_json`` below make them; README: JSON output lists the keys).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bascule.cli.options import (
    add_app_argument,
    add_dir_argument,
    add_json_argument,
    print_json,
    resolve_app,
)
from bascule.errors import Unreachable, UsageError
from bascule.outcome import Exit

if TYPE_CHECKING:
    from bascule.bluegreen import ColorState, Observed
    from bascule.config.secrets import AppSecret
    from bascule.history import Release
    from bascule.tasks.context import Env
    from bascule.tasks.secretref import Missing, TooShort


@contextmanager
def reading(environment: str, directory: str, app: str | None = None) -> Iterator[Env]:
    """The environment opened for reading (for ``app``: default its file's own); its client
    closed afterwards."""
    from bascule.kube import KubeUnreachable
    from bascule.tasks.context import Env

    env = Env.open(environment, directory, app)
    try:
        yield env
    except KubeUnreachable as exc:  # an answer (403, 404...) says itself what went wrong
        raise Unreachable(
            f"the Kubernetes API of {environment} at {env.kube.server} did not answer ({exc}) "
            "— is the cluster up, and are kube.kubeconfig and kube.context (or $KUBECONFIG) "
            "the right ones?"
        ) from None
    finally:
        env.kube.close()


def status_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument(
        "--app", metavar="NAME", help="only this app (default: every app of each environment)"
    )
    parser.add_argument(
        "environments",
        nargs="*",
        metavar="ENV",
        help="default: every environment of --dir (its top-level <name>.yaml files)",
    )
    add_json_argument(parser, "a list: one object per environment and app")


def status(args: argparse.Namespace) -> int:
    from bascule.config_files import app_names
    from bascule.tasks.state import observe

    found: list[dict[str, Any]] = []
    for name in _environments(args):
        apps = app_names(args.dir, name)
        if args.app is not None:
            apps = [resolve_app(args, name)]
        for app in apps:
            with reading(name, args.dir, app) as env:
                obs = observe(env)
            if args.json:
                found.append(status_json(name, env, obs))
            else:
                _print_status(name, env, obs, several=len(apps) > 1 or args.app is not None)
    if args.json:
        print_json(found)
    return Exit.COMPLETED


def _environments(args: argparse.Namespace) -> list[str]:
    """The environments named, or every one of the directory (dev first, production last)."""
    from bascule.config_files import environment_files

    return args.environments or list(environment_files(args.dir))


def status_json(name: str, env: Env, obs: Observed) -> dict[str, Any]:
    """One app in one environment: what serves (null before the first deploy), each color
    that exists, and the release under way, if any."""
    active = obs.active_state

    def color(state: ColorState) -> dict[str, Any]:
        return {
            "color": state.color,
            "active": state.color == obs.active,
            "image": state.image,
            "release": state.release,
            "ready": state.ready,
            "replicas": state.replicas,
        }

    flight = obs.in_flight
    return {
        "environment": name,
        "namespace": env.ns,
        "app": env.app,
        "active_color": obs.active,
        "image": active.image if active else None,
        "release": active.release if active else None,
        "colors": [color(c) for c in obs.colors.values() if c.exists],
        "in_flight": None
        if flight is None
        else {"release": flight.id, "phase": flight.phase, "color": flight.color},
    }


def _print_status(name: str, env: Env, obs: Observed, several: bool) -> None:
    active = obs.active_state
    print(f"{name} ({env.ns}): {env.app}: " if several else f"{name} ({env.ns}): ", end="")
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


def history_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    add_app_argument(parser)
    parser.add_argument("--limit", type=int, default=10, help="default: %(default)s")
    add_json_argument(parser, "the release records, newest first")


def history(args: argparse.Namespace) -> int:
    from bascule.tasks.state import read_history

    with reading(args.environment, args.dir, resolve_app(args)) as env:
        releases, _ = read_history(env)
    if args.json:
        print_json(history_json(env, releases, args.limit))
        return Exit.COMPLETED
    print(
        f"{'release':<24} {'kind':<8} {'result':<12} {'color':<6} {'seconds':>7}  "
        f"{'approver':<12} image / reason"
    )
    for r in list(reversed(releases))[: args.limit]:
        total = sum(s.seconds for s in r.steps)
        print(
            f"{r.id:<24} {r.kind:<8} {r.result:<12} {r.color:<6} {total:7.1f}  "
            f"{(r.decided_by or '-'):<12} {r.image}"
            + (f" (ran {r.digest})" if r.digest and r.digest not in r.image else "")
            + (f" — {r.reason}" if r.reason else "")
        )
    return Exit.COMPLETED


def history_json(env: Env, releases: Sequence[Release], limit: int) -> dict[str, Any]:
    """The newest ``limit`` records of the history, as the history ConfigMap keeps them."""
    return {
        "environment": env.name,
        "namespace": env.ns,
        "app": env.app,
        "releases": [r.to_json() for r in list(reversed(releases))[:limit]],
    }


def secrets_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    add_app_argument(parser)
    add_json_argument(parser, "the variables' names, sources and states (never a value)")


def secrets(args: argparse.Namespace) -> int:
    """Each secret variable, its source and whether it resolves here; values never shown."""
    from bascule.config import environment_file
    from bascule.config_files import exposed_secrets
    from bascule.redact import MASK
    from bascule.tasks.secretref import status

    app = resolve_app(args)
    with reading(args.environment, args.dir, app) as env:
        rows = status(env)
    # A protected environment's blocks, each named with its file, line and field.
    warnings = exposed_secrets(environment_file(args.dir, args.environment), app)
    states = [secret_state(problem) for _, _, problem in rows]
    # A value too short to mask stops a deploy even when the variable is optional.
    refused = sum(
        state == "short" or (state == "missing" and not ref.optional)
        for state, (_, ref, _) in zip(states, rows, strict=True)
    )
    if args.json:
        print_json(secrets_json(args.environment, app, rows, [str(w) for w in warnings]))
        return Exit.USAGE if refused else Exit.COMPLETED
    if not rows:
        print(f"{args.environment}: no secret variables (`secrets:` is empty)")
        return Exit.COMPLETED
    width = max(len(name) for name, _, _ in rows)
    for state, (name, ref, problem) in zip(states, rows, strict=True):
        need = "optional" if ref.optional else "required"
        shown = MASK if problem is None else state
        print(f"{name:<{width}}  {shown:<7}  {need:<8}  {ref.describe()}")
        if problem is not None:
            print(f"{'':<{width}}  {problem}")
    if any(ref.prefect_secret for _, ref, _ in rows):
        print(PREFECT_SECRET_NOTE)
    for warning in warnings:
        print(warning)
    if refused:
        print(f"{refused} secret(s) missing or too short: a deploy would stop, changing nothing")
        return Exit.USAGE
    return Exit.COMPLETED


def secret_state(problem: Missing | TooShort | None) -> str:
    """``resolves``, ``short`` (a value too short to mask) or ``missing``."""
    from bascule.tasks.secretref import TooShort

    if problem is None:
        return "resolves"
    return "short" if isinstance(problem, TooShort) else "missing"


def secrets_json(
    environment: str,
    app: str,
    rows: Sequence[tuple[str, AppSecret, Missing | TooShort | None]],
    warnings: list[str],
) -> dict[str, Any]:
    """Each variable's name, source (as its file names it) and state; no value, not even
    masked. A problem's message names the source and what to do, never the value."""

    def source(ref: AppSecret) -> dict[str, Any]:
        if ref.kubernetes_secret is not None:
            kube = ref.kubernetes_secret
            return {"kubernetes_secret": {"name": kube.name, "key": kube.key}}
        return {"env": ref.env} if ref.env else {"prefect_secret": ref.prefect_secret}

    notes = [PREFECT_SECRET_NOTE] if any(ref.prefect_secret for _, ref, _ in rows) else []
    return {
        "environment": environment,
        "app": app,
        "secrets": [
            {
                "name": name,
                "source": source(ref),
                "required": not ref.optional,
                "state": secret_state(problem),
                "problem": None if problem is None else str(problem),
            }
            for name, ref, problem in rows
        ],
        "warnings": [*warnings, *notes],
    }


PREFECT_SECRET_NOTE = (
    "note: any credential of this Prefect API (any environment's workflow's API key; a "
    "self-hosted server has one login for everything) can read a Prefect Secret block's "
    "value; a secret only one environment's worker should see belongs in that worker's "
    "environment (`env:`) or a Kubernetes Secret in its namespace (`kubernetes_secret:`)"
)


STATS_EPILOG = """\
The four DORA figures of one app in one environment, from its history ConfigMap (what
`bascule history` shows; it keeps history.limit records, so a long period covers fewer):

  deployment frequency   deployments that went live (their switch moved traffic) per day;
                         runs that failed or were rejected before the switch do not count,
                         nor do rollbacks
  change failure rate    the share of those that were then taken back: rolled back by the
                         post-switch checks, or by a later `bascule rollback` while serving,
                         or aborted after the switch (`bascule abort`)
  mean time to restore   from a failed deployment's switch to the switch back to the
                         previous version, averaged over the failures
  lead time for changes  median time from the commit (deploy --commit-time) to the switch,
                         over deployments that succeeded and knew their commit's time
"""


def stats_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    add_app_argument(parser)
    parser.add_argument(
        "--days", type=float, default=30.0, help="the period, ending now (default: %(default)g)"
    )
    add_json_argument(parser, "the figures")
    parser.epilog = STATS_EPILOG


def stats(args: argparse.Namespace) -> int:
    import time

    from bascule.monitoring import dora
    from bascule.tasks.state import read_history

    if args.days <= 0:
        raise UsageError(f"--days {args.days:g}: give a positive number of days")
    with reading(args.environment, args.dir, resolve_app(args)) as env:
        releases, _ = read_history(env)
    figures = dora(env.app, env.name, releases, time.time(), args.days)
    if args.json:
        print_json(figures.to_json())
    else:
        print("\n".join(figures.lines()))
    return Exit.COMPLETED
