"""Rollback: back to the previous good release. One PATCH of the active Service while that
release's color still runs at full size (seconds); otherwise it is redeployed through the
same pipeline as any release."""

from __future__ import annotations

import time
from dataclasses import replace

from prefect import State, flow, get_run_logger
from prefect.states import Completed, Failed

from bascule import bluegreen, kubeevents, snapshots
from bascule import history as h
from bascule.errors import OperationFailed, Refused
from bascule.flows.deploy import (
    Outcome,
    exclusively,
    flow_run_id,
    new_release_id,
    pipeline,
    run_name,
    with_secrets,
)
from bascule.history import now_iso
from bascule.kube import KubeError
from bascule.outcome import StateName
from bascule.tasks import rollout, state, traffic
from bascule.tasks.context import DEFAULT_CONFIG_DIR, Env
from bascule.tasks.preflight import preflight
from bascule.tasks.run import Run, untracked


def choose_target(
    history: list[h.Release], active: str | None, to: str | None, environment: str
) -> h.Release:
    """``to`` if a rollback may return to it (Refused otherwise), else the newest good
    release older than the one serving (ValueError when there is none)."""
    if to:
        return h.rollback_target(history, to, environment)
    current = h.serving(history, active)
    target = h.last_good(history, before=current.id if current else None)
    if target is None:
        raise ValueError("no earlier good release to roll back to")
    return target


@flow(name="rollback", flow_run_name=run_name("rollback"))
def rollback(
    environment: str,
    to_release: str | None = None,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
    app: str | None = None,
    break_lock: str | None = None,
) -> State:
    """Back to the previous good release, or to ``to_release``. ``break_lock``: who breaks
    the lock of a run that still holds it, and why (recorded in the history); without it, a
    live run's lock refuses the rollback and a dead run's is taken over."""
    env = Env.open(environment, config_dir, app)
    if to_release and (refused := unfit_target(env, to_release)):
        return refused
    return exclusively(env, lambda: _rollback(env, to_release), breaking=break_lock)


def unfit_target(env: Env, to_release: str) -> State | None:
    """Refuses (exit 2) a release a rollback may not return to: before the lock and any
    change, from the history as it is now (the choice is made again under the lock)."""
    releases, _ = state.read_history(env)
    try:
        h.rollback_target(releases, to_release, env.name)
    except Refused as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), name=StateName.REFUSED)
    return None


def _rollback(env: Env, to_release: str | None) -> Outcome:
    # No baseline checks: the version being left is the one presumed bad.
    observed = preflight(env)
    if to_release is None and bluegreen.undone_by_reconcile(observed, env.reconciled):
        assert env.reconciled is not None
        return Outcome(already_undone(env, env.reconciled))
    releases, _ = state.read_history(env)
    try:
        target = choose_target(releases, observed.active, to_release, env.name)
    except (Refused, ValueError) as exc:  # Refused here: the history changed since
        return Outcome(Failed(message=str(exc), name=StateName.FAILED))
    release = new_release_id()
    observed = claimed(env, observed, target, release)
    if bluegreen.rollback_plan(observed, target) == "redeploy":
        return redeploy(env, target)
    return Outcome(switch_back(env, observed, target, release))


# Claims of the color to go back to before giving up: each conflict is someone's change (the
# old color's retire scaling it down), or this run's own claim whose answer an outage lost.
CLAIMS = 3


def claimed(
    env: Env, observed: bluegreen.Observed, target: h.Release, by: str
) -> bluegreen.Observed:
    """The state to roll back on. A switch back first claims the color it goes back to
    (rollout.claim), against the version it planned on: the finished deploy that left that
    color scales it down outside the lock, and must see that it serves again. If the color
    changed meanwhile, it is read again and the plan made again (a color scaled down is
    redeployed instead)."""
    for _ in range(CLAIMS):
        color = observed.color(target.color)
        if bluegreen.rollback_plan(observed, target) == "redeploy" or color.claimed_by == by:
            return observed
        try:
            rollout.claim(env, target.color, by, color.version)
            return replace(
                observed, colors={**observed.colors, target.color: replace(color, claimed_by=by)}
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
        observed = state.observe(env)
    raise OperationFailed(
        f"{target.color} changed at each of {CLAIMS} claims before the switch back: nothing "
        "was switched; run the rollback again"
    )


def redeploy(env: Env, target: h.Release) -> Outcome:
    """``target``'s color is gone: its objects as it applied them, stored beside the history,
    go through the same pipeline as any release, never a rendering of the configuration and
    code this run has. A release recorded before they were kept is rendered from today's
    configuration, with a warning; a protected environment refuses that instead."""
    log = get_run_logger()
    try:
        found = state.stored_objects(env, target.id)
        source = snapshots.to_redeploy(target, found, env.name, env.cfg.protected)
    except (Refused, ValueError) as exc:  # ValueError: not a release's objects
        log.error("%s", exc)
        return Outcome(Failed(message=str(exc), name=StateName.REFUSED))
    if isinstance(source, snapshots.Snapshot):
        log.info("%s is no longer running: redeploying its stored objects", target.image)
        # Its own Secret, which the history keeps while it holds the release: no value is
        # read, today's included.
        env.stored_secret = source.release_secret
        if source.service is not None:
            # Its Service, which its pods serve: the preview and active Services, and the
            # checks through them, are made from it rather than from today's template.
            env.templates = replace(env.templates, service=source.service)
        else:
            log.warning(
                "release %s was recorded before Bascule kept its Service: its preview Service "
                "is today's rendering, and the active Service keeps what the current release "
                "gave it",
                target.id,
            )
        return pipeline(env, target.image, kind="rollback", approval=False, stored=source)
    log.warning("%s", source)
    # Rendered anew, so with today's secret values.
    if refused := with_secrets(env):
        return Outcome(refused)
    return pipeline(env, target.image, kind="rollback", approval=False)


def switch_back(env: Env, observed: bluegreen.Observed, target: h.Release, release: str) -> State:
    bad = observed.active
    run = Run(
        env,
        h.Release(
            id=release,
            image=target.image,
            color=target.color,
            previous_image=observed.active_state.image if observed.active_state else None,
            previous_color=bad,
            started=now_iso(),
            flow_run_id=flow_run_id(),
            kind="rollback",
            digest=target.digest,  # the same pods serve again
        ),
    )
    run.save(phase="planned")
    run.tell(*kubeevents.stage_notes("started", run.release, {}))
    # The ports and the rest that its pods serve, brought back by the same PATCH.
    service = state.service_back(env, observed, target.color)
    started = time.monotonic()
    run.step("switch", untracked(traffic.switch), env, target.color, bad, target.image, service)
    seconds = time.monotonic() - started
    run.save(phase="switched")
    if bad:
        run.step("scale-down-bad", untracked(rollout.scale), env, bad, 0)
    run.save(
        phase="done",
        result="succeeded",
        finished=now_iso(),
        reason=f"rolled back to {target.id} by switching traffic in {seconds:.2f} s",
    )
    run.event("rolled-back", seconds=seconds)
    run.publish()
    return Completed(message=f"{target.image} serves again ({target.color}) after {seconds:.2f} s")


def already_undone(env: Env, undone: h.Release) -> State:
    """The run being rolled back had died in flight, and preflight's reconcile has just put
    it right: that was the rollback. Going on would leave a second release behind."""
    said = (
        f"{undone.id} ({undone.image}), left in flight by a run that died, was put right: "
        f"{undone.reason}. That was the rollback; no older release was touched "
        "(`bascule rollback --to RELEASE` goes further back)"
    )
    get_run_logger().info("%s", said)
    step = h.Step("rollback", "ok", 0.0, f"by rollback flow run {flow_run_id()}", time.time())
    if env.lock_broken:
        step = replace(step, detail=f"{step.detail}; {env.lock_broken}")
    state.save(env, undone.with_step(step))
    return Completed(message=said)
