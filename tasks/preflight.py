"""Before anything changes: the cluster answers, the namespace exists, we may do what a
deploy does, a half-finished earlier run is put right, the active version is healthy and the
idle color seems to fit on the nodes."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bascule import bluegreen, capacity, kubeevents, rbac
from bascule import history as h
from bascule import kube as k
from bascule import workload as w
from bascule.checks import CheckResult
from bascule.config_files import shipped_roles
from bascule.errors import OperationFailed
from bascule.kube import KubeError
from bascule.manifests import idle_color, selector
from bascule.tasks import abort, checks, rollout, state, traffic
from bascule.tasks.context import Env
from bascule.tasks.kubeevents import Story
from bascule.vocabulary import Color


class PreflightFailed(OperationFailed):
    pass


def definition() -> dict[rbac.Feature, tuple[rbac.Rule, ...]]:
    """The shipped Roles' rules by feature (deployments/rbac/): what preflight checks is what
    they grant."""
    return rbac.by_feature(shipped_roles())


def needed(env: Env) -> list[rbac.Permission]:
    """What this app's runs need in its namespace: the shipped Roles of its features,
    filled in with its names, as `bascule rbac` prints them."""
    names = rbac.values(env.cfg, env.workload)
    return rbac.needed(definition(), rbac.features(env.cfg), env.ns, names)


def permissions(env: Env) -> list[str]:
    """What we may not do of what the shipped Roles grant, for this environment's features."""
    return missing(env, needed(env), env.ns)


def missing(env: Env, needed: list[rbac.Permission], namespace: str) -> list[str]:
    """Those of ``needed`` we may not do in ``namespace``. One SelfSubjectRulesReview answers
    for everything RBAC grants there; a SelfSubjectAccessReview asks about each permission it
    does not show (another authorizer may allow it)."""
    review = env.kube.create(
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        },
        idempotent=True,  # a question, not a change
    )
    granted = rbac.rules_of_review(review.get("status", {}))
    return [str(p) for p in needed if not rbac.allows(granted, p) and not _allowed(env, p)]


def _allowed(env: Env, want: rbac.Permission) -> bool:
    attributes = {
        "namespace": want.namespace,
        "verb": want.verb,
        "group": want.group,
        "resource": want.resource,
        "subresource": want.subresource,
        "name": want.name,
    }
    review = env.kube.create(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}},
        },
        idempotent=True,
    )
    return bool(review.get("status", {}).get("allowed"))


def reconcile(env: Env, observed: bluegreen.Observed) -> bluegreen.Observed:
    """Applies bluegreen.recover to a release an earlier run left in flight: recorded
    aborted if that run was asked to stop (a worker killed it on a cancel), else interrupted."""
    rel = observed.in_flight
    fix = bluegreen.recover(observed, abort.request(rel.flow_run_id) if rel else None)
    if fix is None or rel is None:
        return observed
    log = get_run_logger()
    log.warning("reconciling release %s left in phase %s: %s", rel.id, rel.phase, fix.reason)
    if fix.switch_to:
        # Back to the ports and the rest that the old pods serve, in the same PATCH.
        service = state.service_back(env, observed, fix.switch_to)
        image = observed.color(fix.switch_to).image
        traffic.switch(env, fix.switch_to, rel.color, image, service)
    if fix.scale_down:
        rollout.scale(env, fix.scale_down, 0)
    story = Story(env, "Reconcile", log)
    story.tell(kubeevents.reconciled(rel, fix.reason, fix.switch_to))
    story.flush()
    env.reconciled = replace(
        rel,
        phase="done",
        result=fix.result,
        reason=fix.reason,
        finished=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        steps=(*rel.steps, h.Step("reconciled", "ok", 0.0, fix.reason)),
    )
    state.save(env, env.reconciled)
    return state.observe(env)


@task(name="preflight", cache_policy=NO_CACHE)
def preflight(env: Env) -> bluegreen.Observed:
    try:
        env.kube.get("/version")
    except KubeError as exc:
        raise PreflightFailed(f"the cluster at {env.kube.server} does not answer: {exc}") from exc
    if env.kube.get_or_none(f"/api/v1/namespaces/{env.ns}") is None:
        raise PreflightFailed(
            f"namespace {env.ns} does not exist: create it (kubectl create namespace {env.ns}) "
            f"or fix `namespace` in the {env.name} configuration"
        )
    denied = permissions(env)
    if denied:
        raise PreflightFailed(
            f"not allowed in namespace {env.ns}: {', '.join(denied)} — give the run's account "
            f"the Roles `bascule rbac {env.name}` prints (README: Permissions)"
        )
    return reconcile(env, state.observe(env))


def baseline_checks(env: Env, observed: bluegreen.Observed) -> list[CheckResult]:
    """The active version's health and whether the idle color seems to fit: evidence for
    the report and warnings, never a refusal, so a deploy runs them while its idle color
    starts (``flows.deploy``)."""
    results: list[CheckResult] = []
    active = observed.active_state
    if active is not None and active.image:
        results = checks.health_checks.fn(env, "active", active.image, "baseline")
        failed = [c for c in results if not c.passed]
        if failed:
            # The running version is already unhealthy: a deploy may be the fix, so warn
            # rather than refuse, and keep the evidence in the report.
            get_run_logger().warning(
                "baseline: the active version fails %s", ", ".join(c.name for c in failed)
            )
    room = fits(env, idle_color(observed.active))
    if room is not None:
        results.append(room)
    return results


def fits(env: Env, idle: Color) -> CheckResult | None:
    """Whether the idle color's pods seem to fit beside everything else on the nodes: a
    warning in the report (the scheduler decides). None when the nodes or the pods of other
    namespaces may not be read, as with a namespaced role."""
    started = time.monotonic()
    try:
        nodes = env.kube.get(k.nodes())["items"]
        pods = env.kube.get(k.pods(), fieldSelector="status.phase!=Succeeded,status.phase!=Failed")
    except KubeError as exc:
        get_run_logger().info("no capacity estimate: %s", exc)
        return None

    def of(color: Color, pod: dict[str, Any]) -> bool:
        wanted = selector(env.app, color).items()
        meta = pod["metadata"]
        return bool(
            meta.get("namespace") == env.ns and wanted <= (meta.get("labels") or {}).items()
        )

    # The idle color's own pods, if it still runs, make way for the new ones.
    others = [p for p in pods["items"] if not of(idle, p)]
    spec = env.templates.deployment["spec"]["template"]["spec"]
    count = env.cfg.replicas
    autoscaler = w.autoscaler_of(o.data for o in env.workload.per_color)
    if autoscaler is not None:  # it starts at the active color's count (rollout.start_replicas)
        running = sum(1 for p in others if of(idle_color(idle), p))
        count = w.start_replicas(running or None, env.cfg.replicas, autoscaler)
    try:
        ok, detail = capacity.fit(nodes, others, spec, count)
    except ValueError as exc:  # a quantity we cannot read: the scheduler will judge
        get_run_logger().info("no capacity estimate: %s", exc)
        return None
    if not ok:
        get_run_logger().warning("capacity: %s", detail)
    return CheckResult("capacity", "preflight", ok, detail, 1, time.monotonic() - started)
