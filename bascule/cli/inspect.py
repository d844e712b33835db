"""``bascule status | history``: what the cluster says serves where, and what was deployed.

Read-only. A cluster that does not answer is an ``Unreachable`` error (exit 7) naming the
API server and what to check, not a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bascule.cli.options import add_app_argument, add_dir_argument, resolve_app
from bascule.config import ENVIRONMENTS
from bascule.errors import Unreachable, UsageError
from bascule.outcome import Exit

if TYPE_CHECKING:
    from bascule.bluegreen import Observed
    from tasks.context import Env


@contextmanager
def reading(environment: str, directory: str, app: str | None = None) -> Iterator[Env]:
    """The environment opened for reading (for ``app``: default its file's own); its client
    closed afterwards."""
    from bascule.kube import KubeUnreachable
    from tasks.context import Env

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
        "environments", nargs="*", metavar="ENV", help="default: " + ", ".join(ENVIRONMENTS)
    )


def status(args: argparse.Namespace) -> int:
    from bascule.config_files import app_names
    from tasks.state import observe

    for name in args.environments or ENVIRONMENTS:
        apps = app_names(args.dir, name)
        if args.app is not None:
            apps = [resolve_app(args, name)]
        for app in apps:
            with reading(name, args.dir, app) as env:
                obs = observe(env)
            _print_status(name, env, obs, several=len(apps) > 1 or args.app is not None)
    return Exit.COMPLETED


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


def history(args: argparse.Namespace) -> int:
    from tasks.state import read_history

    with reading(args.environment, args.dir, resolve_app(args)) as env:
        releases, _ = read_history(env)
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


def secrets_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument("environment", metavar="ENV")
    add_app_argument(parser)


def secrets(args: argparse.Namespace) -> int:
    """Each secret variable, its source and whether it resolves here; values never shown."""
    from bascule.config import environment_file
    from bascule.config_files import exposed_secrets
    from bascule.redact import MASK
    from tasks.secretref import TooShort, status

    app = resolve_app(args)
    with reading(args.environment, args.dir, app) as env:
        rows = status(env)
    if not rows:
        print(f"{args.environment}: no secret variables (`secrets:` is empty)")
        return Exit.COMPLETED
    width = max(len(name) for name, _, _ in rows)
    refused = 0
    for name, ref, problem in rows:
        need = "optional" if ref.optional else "required"
        short = isinstance(problem, TooShort)
        shown = MASK if problem is None else "short" if short else "missing"
        print(f"{name:<{width}}  {shown:<7}  {need:<8}  {ref.describe()}")
        if problem is not None:
            print(f"{'':<{width}}  {problem}")
            refused += short or not ref.optional
    if any(ref.prefect_secret for _, ref, _ in rows):
        print(PREFECT_SECRET_NOTE)
    # A protected environment's blocks, each named with its file, line and field.
    for warning in exposed_secrets(environment_file(args.dir, args.environment), app):
        print(warning)
    if refused:
        print(f"{refused} secret(s) missing or too short: a deploy would stop, changing nothing")
        return Exit.USAGE
    return Exit.COMPLETED


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
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.epilog = STATS_EPILOG


def stats(args: argparse.Namespace) -> int:
    import json
    import time

    from bascule.monitoring import dora
    from tasks.state import read_history

    if args.days <= 0:
        raise UsageError(f"--days {args.days:g}: give a positive number of days")
    with reading(args.environment, args.dir, resolve_app(args)) as env:
        releases, _ = read_history(env)
    figures = dora(env.app, env.name, releases, time.time(), args.days)
    print(json.dumps(figures.to_json(), indent=1) if args.json else "\n".join(figures.lines()))
    return Exit.COMPLETED
