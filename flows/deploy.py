"""The blue-green pipeline of one environment, as a Prefect flow:

plan → lock → preflight (reconcile a half-finished earlier run, baseline checks) → deploy
the idle color → wait ready → pre-switch checks and smoke tests on the preview Service →
the Prometheus analysis of preview → approval (where configured) → switch → smoke tests on
the active Service → post-switch verification window (health checks and analysis) → finish
(history, delayed scale-down of the old color) or roll back (switch back, scale the new
color down). With a ``migrations:`` section: migration plan + lint after preflight, expand
revisions before the idle color starts, contract revisions once the old color is gone (again
under the lock).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from prefect import State, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as prefect_runtime_flow_run
from prefect.states import Cancelled, Completed, Failed

from bascule import bluegreen
from bascule import history as h
from bascule.analysis import Evaluation, placeholders, summary
from bascule.errors import Refused, UsageError
from bascule.flows.approval import Signing, description, request_approval
from bascule.flows.engine import (
    exceptions_kept_local,
    expected_failures_in_one_line,
    heartbeats_unjoined,
    state_messages_masked,
)
from bascule.flows.migration_steps import contract, plan_and_lint, run_phase
from bascule.gitcommit import read_commit
from bascule.history import now_iso
from bascule.kube import KubeError
from bascule.kubeevents import scaled_down
from bascule.manifests import idle_color, service_proxy_path
from bascule.migrations import MigrationPlan, Phase, render_markdown
from bascule.monitoring import normal_time
from bascule.outcome import StateName
from bascule.redact import redact
from bascule.signoff import Request
from bascule.snapshots import Snapshot
from bascule.tasks import (
    abort,
    analysis,
    checks,
    promotion,
    rollout,
    secretref,
    state,
    traffic,
)
from bascule.tasks.context import DEFAULT_CONFIG_DIR, Env
from bascule.tasks.kubeevents import Story
from bascule.tasks.lock import LockHeld, deploy_lock
from bascule.tasks.preflight import baseline_checks, preflight
from bascule.tasks.run import Run, untracked
from bascule.tasks.threads import in_thread
from bascule.vocabulary import Color

heartbeats_unjoined()
expected_failures_in_one_line()
state_messages_masked()
exceptions_kept_local()


def new_release_id() -> str:
    return f"r{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


def flow_run_id() -> str | None:
    """The id of the flow run we are in, also from inside a task; None outside a run."""
    run_id = prefect_runtime_flow_run.id
    return str(run_id) if run_id else None


@dataclass(frozen=True)
class Outcome:
    state: State
    # The old color as the run found it (under the lock): scaled down after the delay.
    retire: bluegreen.ColorState | None = None
    then: Callable[[], Outcome] | None = None  # once the old color is gone, under the lock again


@task(name="plan", cache_policy=NO_CACHE)
def plan(
    env: Env,
    image: str,
    observed: bluegreen.Observed,
    kind: str,
    commit: str | None = None,
    commit_time: str | None = None,
) -> h.Release:
    active = observed.active_state
    return h.Release(
        id=new_release_id(),
        image=image,
        color=idle_color(observed.active),
        previous_image=active.image if active else None,
        previous_color=observed.active,
        started=now_iso(),
        flow_run_id=flow_run_id(),
        kind=kind,
        commit=commit,
        secret=secret.name if (secret := env.release_secret) else None,
        commit_time=commit_time,
    )


def refusal(exc: Exception) -> State:
    """The end of a run refused before the lock and any change (exit 2), saying why."""
    get_run_logger().error("%s", exc)
    return Failed(message=str(exc), name=StateName.REFUSED)


def with_secrets(env: Env) -> State | None:
    """Gives ``env`` its secret variables' values: before the lock and any other change, so
    a missing one ends the run (the state returned, exit 2) with nothing touched. From here
    on the process masks them."""
    try:
        env.secrets = secretref.resolve_all(env)
    except UsageError as exc:
        return refusal(exc)
    return None


def with_evidence_key(env: Env) -> State | None:
    """Gives ``env`` the key its worker signs promotion evidence with, if it holds one:
    before the lock, so an environment that would run the app's migrations beside that key
    is refused (exit 2) with nothing touched."""
    try:
        env.evidence_key = promotion.evidence_key(env)
    except UsageError as exc:
        return refusal(exc)
    return None


def promoted(env: Env, image: str, config_dir: str) -> State | None:
    """With ``promote_from:``, refuses (exit 2) an image whose digest that environment never
    verified, or (promotion.evidence_signers) whose verification its worker did not sign:
    before the lock and any change, whatever started the run. Rollbacks and redeploys return
    to this environment's own releases and are not checked."""
    try:
        source = promotion.check(env, image, config_dir)
    except Refused as exc:
        return refusal(exc)
    if source is not None:
        signed = " (signed by its worker)" if env.cfg.promotion.evidence_signers else ""
        get_run_logger().info(
            "%s was verified in %s by release %s%s",
            source.digest,
            env.cfg.promote_from,
            source.id,
            signed,
        )
    return None


def run_name(what: str) -> Callable[[], str]:
    """A flow run's name: its environment, its app when the run names one (an environment's
    runs of ten apps must be told apart), and ``what``, formatted with its parameters."""

    def name() -> str:
        params: dict[str, Any] = prefect_runtime_flow_run.parameters
        app = params.get("app")
        where = f"{params['environment']}/{app}" if app else params["environment"]
        return f"{where}: {what.format(**params)}"

    return name


@flow(name="deploy", flow_run_name=run_name("{image}"))
def deploy(
    environment: str,
    image: str | None = None,
    commit: str | None = None,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
    redeploy: bool = False,
    commit_time: str | None = None,
    app: str | None = None,
) -> State:
    """Deploys ``image`` (default: the environment's configured image) blue-green. An image
    that already serves, with nothing else changed, is left as it is unless ``redeploy``.
    ``commit_time`` (ISO-8601) gives the lead time from commit to live. ``app``: one of the
    environment's apps (default: its file's own)."""
    commit_time = commit_time and normal_time(commit_time)
    env = Env.open(environment, config_dir, app)
    target_image = env.cfg.resolve_image(image)
    refused = promoted(env, target_image, config_dir) or with_evidence_key(env) or with_secrets(env)
    if refused:
        return refused
    return exclusively(
        env,
        lambda: pipeline(
            env,
            target_image,
            kind="deploy",
            commit=commit,
            commit_time=commit_time,
            skip_if_serving=not redeploy,
        ),
    )


def exclusively(env: Env, work: Callable[[], Outcome], breaking: str | None = None) -> State:
    """Runs ``work`` holding the app and environment's deploy lock; a refused lock ends the
    run as LockHeld. The run's report and notifications (``Run.publish``) come right after
    the lock is released, and the old color's delayed scale-down after them,
    so a rollback can still take it back meanwhile; what must wait until the old color is
    gone (contract migrations) then takes the lock again. ``breaking``: who breaks a live
    holder's lock and why (``tasks.lock.deploy_lock``)."""
    try:
        with deploy_lock(env, f"flow-run/{flow_run_id() or uuid.uuid4()}", breaking=breaking):
            outcome = work()
            prune(env)
    except LockHeld as exc:
        return too_late(Failed(message=str(exc), name=StateName.LOCK_HELD))
    while env.after_unlock:
        env.after_unlock.pop(0)()
    if outcome.retire is not None:
        get_run_logger().info(retire_old_color(env, outcome.retire))
    if outcome.then is not None:
        return exclusively(env, outcome.then)
    return too_late(outcome.state)


def too_late(state: State) -> State:
    """``state``, or, for a run asked to stop that went on anyway (past the point where
    stopping would undo anything, or before it looked), the same named Cancelled, saying
    so: Prefect ends a Cancelling run Cancelled only, and would leave it Cancelling."""
    if state.is_cancelled() or (who := abort.request(flow_run_id())) is None:
        return state
    said = f"{state.message} (asked to stop, {who}, too late to undo it)"
    return Cancelled(message=said, name=state.name)


def prune(env: Env) -> None:
    """Deletes the stored objects, the ConfigMaps and the Secrets of releases that left the
    history: a rollback can only return to a release the history still holds. A failure
    here costs a leftover ConfigMap or Secret, not the run."""
    log = get_run_logger()
    try:
        releases, _ = state.read_history(env)
        if gone := state.prune_objects(env, {r.id for r in releases}):
            log.info("deleted the stored objects of releases no longer kept: %s", ", ".join(gone))
        if gone := rollout.prune_config_maps(env):
            log.info("deleted the ConfigMaps of releases no longer kept: %s", ", ".join(gone))
        keep = {r.secret for r in releases if r.secret}
        if not keep and not env.cfg.secrets:
            return  # an app without secrets: no Secret to look for, no permission needed
        gone = rollout.prune_secrets(env, keep)
    except Exception as exc:
        log.warning("old releases' objects or Secrets not deleted: %s", exc)
        return
    if gone:
        log.info("deleted the Secrets of releases no longer kept: %s", ", ".join(gone))


def pipeline(
    env: Env,
    image: str,
    kind: str,
    approval: bool = True,
    note: str = "",
    commit: str | None = None,
    skip_if_serving: bool = False,
    commit_time: str | None = None,
    stored: Snapshot | None = None,
) -> Outcome:
    """``stored``: a rollback's, the objects the release it returns to applied, deployed
    as they were instead of rendered from today's configuration (its Service too: the
    caller puts it in ``env.templates``, which the preview Service and checks use)."""
    observed = preflight(env)
    if skip_if_serving and (serving := already_serving_note(env, image, observed)):
        get_run_logger().info(serving)
        return Outcome(Completed(message=serving))
    # They only warn: they run while the idle color starts, and join before the switch.
    baseline = in_thread(baseline_checks, env, observed)
    release = untracked(plan)(env, image, observed, kind, commit, commit_time)
    run = Run(env, release, baseline)
    run.watch = abort.Watch(release.flow_run_id)  # a request to stop is honoured until done
    if note:  # what the caller found before planning, e.g. drift for a scheduled redeploy
        run.release = run.release.with_step(h.Step("drift-check", "ok", 0.0, note, time.time()))
    run.save(phase="planned")
    run.event("started", previous_image=release.previous_image)
    new: Color = release.color
    old: Color | None = release.previous_color
    try:
        migrations = plan_and_lint(run, image)
        run_phase(run, migrations, Phase.EXPAND, image)
        run.save(phase="deploying")
        objects = run.step(
            "deploy-idle-color",
            untracked(rollout.apply_color),
            env,
            new,
            image,
            release.id,
            stored,
            detail=f"{new} ← {image}" + (" as it was deployed (stored objects)" if stored else ""),
        )
        run.step("point-preview", untracked(traffic.point_preview), env, new, image)
        ready = run.step(
            "wait-ready",
            rollout.wait_ready,
            env,
            new,
            release.id,
            stored.replicas if stored else None,
            summary=lambda r: r.summary,
        )
        run.join_baseline()
        run.save(phase="checking", digest=ready.digest, objects=objects)
        # The switch need not wait for the label (its digest is in the history already).
        run.artifacts.later(promotion.label_run, release.flow_run_id, run.release.digest)
        run.checked(
            "pre-switch health",
            run.step(
                "pre-switch-checks",
                untracked(checks.health_checks),
                env,
                "preview",
                image,
                "preview",
            ),
        )
        run.checked(
            "smoke tests",
            run.step("smoke-http", untracked(checks.smoke_http), env, "preview", image),
        )
        job = run.step("smoke-job", untracked(checks.smoke_job), env, "preview", release.id, image)
        if job is not None:
            run.checked("smoke job", [job])
        values = placeholders(
            env.ns,
            env.app,
            env.name,
            new,
            release.id,
            old,
            observed.color(old).release if old else None,
        )
        run.preview = env.cfg.preview.link(values)
        if env.cfg.analysis.runs("preview"):
            run.step("analysis-preview", analysis.preview, env, values)
        if approval and env.cfg.approval.required:
            run.save(phase="awaiting-approval")
            run.event("awaiting-approval")
            # Without preview.url, the API server's proxy: it needs cluster credentials.
            preview = run.preview or env.kube.server + service_proxy_path(
                env.cfg, env.templates, role="preview", path="/"
            )
            decision = request_approval(
                description(
                    env.app,
                    env.name,
                    run.release,
                    run.checks,
                    preview,
                    render_markdown(migrations) if migrations else "",
                ),
                env.cfg.approval.timeout_seconds,
                signing(env, run.release),
                on_refused=run.approval_refused,
                preview=preview,
            )
            run.save(
                approver=decision.approver,
                comment=decision.comment,
                approver_key=decision.approver_key,
                signers=decision.signers,
            )
            if not decision.approved:
                name = StateName.APPROVAL_TIMED_OUT if decision.timed_out else StateName.REJECTED
                return Outcome(abandon(run, new, "rejected", decision.reason, name))
            run.event("approved", approver=decision.approver)
    except abort.Aborted as exc:  # asked to stop before the switch: traffic never moved
        return Outcome(abandon(run, new, "aborted", str(exc), StateName.ABORTED))
    except Exception as exc:  # any failure before the switch: traffic never moved
        run.failed_with(exc)
        if isinstance(exc, rollout.RolloutFailed):
            run.details.append(exc.report)
        return Outcome(
            abandon(run, new, "failed", f"{type(exc).__name__}: {exc}", StateName.FAILED)
        )

    try:
        # The release's Service comes with it: a new one's rendering, or the one a
        # rollback's stored release applied (none when it was stored before they were).
        service = env.templates.service if stored is None else stored.service
        switch_s = run.step("switch", untracked(traffic.switch), env, new, old, image, service)
    except abort.Aborted as exc:  # seen as the switch step began: it did not start
        return Outcome(abandon(run, new, "aborted", str(exc), StateName.ABORTED))
    except traffic.SwitchConflict as exc:  # someone else moved traffic: touch nothing of theirs
        return Outcome(abandon(run, new, "failed", str(exc), StateName.FAILED))
    except Exception as exc:  # the PATCH may have landed: make sure the old color serves
        return Outcome(roll_back(run, observed, old, f"the switch did not complete: {exc}"))
    run.save(phase="switched")
    run.event("switched", seconds=switch_s)
    if kind == "rollback":  # back on a verified release: finished, as bluegreen.recover does
        run.watch = abort.Watch(None)
    try:
        if env.cfg.checks.smoke.after_switch and env.cfg.checks.smoke.http:
            run.checked(
                "post-switch smoke tests",
                run.step("smoke-http-active", untracked(checks.smoke_http), env, "active", image),
            )
        run.step("verify", verify, env, image, values, run.watch)
    except abort.Aborted as exc:
        return Outcome(roll_back(run, observed, old, str(exc), aborted=True))
    except Exception as exc:
        run.failed_with(exc)
        return Outcome(roll_back(run, observed, old, f"post-switch verification failed: {exc}"))

    run.watch = abort.Watch(None)  # verified: from here on, stopping would undo nothing
    final = replace(run.release, phase="done", result="succeeded", finished=now_iso())
    # Signed once the record is final: the signature is over its finish time, too.
    signature = promotion.evidence(env, final, env.evidence_key)
    run.save(phase="done", result="succeeded", finished=final.finished, evidence=signature)
    if signature:
        run.log.info("promotion evidence of %s signed (%s)", final.id, final.digest)
    run.event("succeeded")
    run.publish()
    done: State = Completed(message=f"{image} serves {env.app} in {env.name} ({new})")
    after = None
    if migrations is not None and migrations.contract_target is not None:
        after = partial(contract_phase, run, migrations, image, old)
    return Outcome(done, observed.color(old) if old else None, after)


def contract_phase(run: Run, migrations: MigrationPlan, image: str, old: Color | None) -> Outcome:
    """The contract revisions of a release that already serves: a failure leaves it serving
    and ends the run failed, with the failing revision in the report."""
    try:
        note = contract(run, migrations, image, old)
    except Exception as exc:
        run.save(reason=f"{run.release.image} serves; {exc}")
        run.publish()
        return Outcome(Failed(message=str(exc), name=StateName.FAILED))
    run.publish()
    return Outcome(Completed(message=f"{image} serves {run.env.app} in {run.env.name}; {note}"))


def signing(env: Env, release: h.Release) -> Signing | None:
    """What an approver signs in this run, where the environment takes signed approvals only,
    how many must, and (approval.four_eyes) whose commit it is."""
    signers = env.cfg.approval.allowed_signers
    if signers is None:
        return None
    run_id = flow_run_id()
    if run_id is None:  # the gate pauses a flow run: there is always one
        raise RuntimeError("an approval can only be asked for inside a flow run")
    subject = Request(run_id, env.name, env.app, release.image, release.id)
    # The reviewed config's checkout: the run's clone of the repository at its commit.
    commit = read_commit(release.commit, signers.parent) if env.cfg.approval.four_eyes else None
    return Signing(subject, signers, env.cfg.approval.min_signers, commit)


def already_serving_note(env: Env, image: str, observed: bluegreen.Observed) -> str | None:
    """What to say when deploying ``image`` would change nothing, else None."""
    active = observed.active_state
    if active is None:
        return None
    recorded = h.serving(observed.releases, active.color)
    # The dry run is only worth a request when the image already matches.
    unchanged = (
        active.image == image
        and active.release is not None
        and rollout.applies_unchanged(env, active.color, image, active.release)
    )
    if not bluegreen.already_serving(observed, image, recorded, unchanged):
        return None
    return (
        f"already serving: {image} serves {env.app} in {env.name} ({active.color}, release "
        f"{active.release}); nothing changed. To run the whole cycle anyway: "
        "`bascule deploy --redeploy` (flow parameter redeploy=True)"
    )


# Reads of the old color before its scale-down gives up: each conflict is someone's change.
RETIRE_READS = 3


def retire_old_color(env: Env, seen: bluegreen.ColorState) -> str:
    """After the scale-down delay, outside the lock: the old color goes to zero unless a
    rollback claimed it or another deploy reused it meanwhile (bluegreen.keep_old_color)."""
    old = seen.color
    remaining = env.cfg.rollout.scale_down_delay_seconds - env.cfg.verification.window_seconds
    if remaining > 0:
        time.sleep(remaining)  # meanwhile a rollback is one PATCH
    for _ in range(RETIRE_READS):
        observed = state.observe(env)
        now = observed.color(old)
        if kept := bluegreen.keep_old_color(seen, now, observed.active):
            return f"{old} {kept}"
        try:
            # With the version read: a rollback's claim or a deploy's apply since makes it
            # conflict (the outage retries are the client's; a conflict is never repeated).
            rollout.set_replicas(env, old, 0, now.version)
            break
        except KubeError as exc:
            if exc.status != 409:
                raise
    else:
        return f"{old} kept: it changed at each of {RETIRE_READS} reads"
    story = Story(env, "Deploy", get_run_logger())
    left = f"release {seen.release}" if seen.release else "its release"
    story.tell([scaled_down(old, f"{left} no longer serves, and the scale-down delay passed")])
    story.flush()
    return f"{old} scaled to zero"


@task(name="verify", cache_policy=NO_CACHE)
def verify(
    env: Env, image: str, values: dict[str, str], watch: abort.Watch | None = None
) -> analysis.Passed:
    """The post-switch window: every health check against the active Service each
    verification interval, and the active analysis queries each analysis interval; a
    failed check, or a failed gate, ends the window and rolls back. ``watch``: a request to
    stop (Aborted) ends it too, seen within its poll."""
    window, every = env.cfg.verification.window_seconds, env.cfg.verification.interval_seconds
    gate = env.cfg.analysis
    # On a clock that stands still through an API outage: the window observes the new
    # version for its whole length, however long the control plane blinked.
    start = env.kube.active_time()
    deadline, next_probe = start + window, start
    next_query = start if gate.runs("active") else math.inf
    evaluations: list[Evaluation] = []
    rounds = 0
    while True:
        if watch is not None:
            watch.check()
        if env.kube.active_time() >= next_probe:
            rounds += 1
            probed = checks.probe_once(env, "active", image, "active")
            failed = [c for c in probed if not c.passed]
            if failed:
                reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
                raise analysis.VerificationFailed(reason, evaluations)
            next_probe += every
        if env.kube.active_time() >= next_query:
            analysis.evaluate_round(gate, "active", values, evaluations, get_run_logger().info)
            next_query += gate.interval_seconds
        due = min(next_probe, next_query)
        if due > deadline:
            gated = f"; analysis: {summary(evaluations)}" if evaluations else ""
            return analysis.Passed(
                f"{rounds} round{'s' * (rounds != 1)} over {window} s passed{gated}",
                tuple(evaluations),
            )
        time.sleep(max(0.0, min(due - env.kube.active_time(), abort.POLL_S)))


def abandon(run: Run, new: Color, result: h.Result, reason: str, state_name: StateName) -> State:
    """No traffic moved: scale the idle color down and record why."""
    reason = redact(reason)
    run.log.error("no switch: %s", reason)
    untracked(rollout.scale)(run.env, new, 0)
    run.tell(scaled_down(new, f"{run.release.id} was not switched to", run.release.image))
    run.save(phase="done", result=result, reason=reason, finished=now_iso())
    timed_out = state_name is StateName.APPROVAL_TIMED_OUT
    run.event("approval-timed-out" if timed_out else result, reason=reason)
    run.publish(state_name)
    return ending(state_name, reason)


def ending(name: StateName, message: str) -> State:
    """A run's final state when it did not deploy, named for why: Cancelled for one that
    stopped on request (Aborted), as Prefect shows a cancelled run; else Failed."""
    if name is StateName.ABORTED:
        return Cancelled(message=message, name=name)
    return Failed(message=message, name=name)


def roll_back(
    run: Run, observed: bluegreen.Observed, old: Color | None, reason: str, aborted: bool = False
) -> State:
    """Traffic goes back to the old color, still at full size (as ``observed`` before the
    deploy), with the Service its release applied: one PATCH. ``aborted``: the run was
    asked to stop (``reason`` says by whom), rather than failing its checks."""
    new = run.release.color
    reason = redact(reason)
    run.log.error("rolling back: %s", reason)
    if old is None:  # a first deploy has nothing to go back to; keep serving what we have
        result: h.Result = "aborted" if aborted else "failed"
        run.save(
            phase="done",
            result=result,
            reason=reason + " (no older release to return to)",
            finished=now_iso(),
        )
        run.event(result, reason=run.release.reason)
        run.publish()
        return ending(StateName.ABORTED if aborted else StateName.FAILED, reason)
    # The ports and the rest that the old color's pods serve (one read; none: selector only).
    service = state.service_back(run.env, observed, old)
    started = time.monotonic()
    # The plain function, not a task run: creating one cost 1-2 s on a busy Prefect server,
    # and here every second is a second of the bad version serving. The step is in the report.
    traffic.switch.fn(run.env, old, new, run.release.previous_image, service)
    seconds = time.monotonic() - started
    run.release = run.release.with_step(
        h.Step("rollback-switch", "ok", seconds, f"{new} → {old}", time.time())
    )
    untracked(rollout.scale)(run.env, new, 0)
    run.tell(scaled_down(new, f"{run.release.id} was rolled back", run.release.image))
    result = "aborted" if aborted else "rolled-back"
    run.save(phase="done", result=result, reason=reason, finished=now_iso())
    run.event(result, reason=reason, seconds=seconds)
    run.publish()
    message = f"rolled back in {seconds:.2f} s: {reason}"
    return ending(StateName.ABORTED if aborted else StateName.ROLLED_BACK, message)
