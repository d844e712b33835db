"""Bringing a color up to a release, waiting until it is Ready, scaling colors down."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from bascule import kube as k
from bascule import workload as w
from bascule.errors import OperationFailed
from bascule.images import pods_digest
from bascule.kube import KubeError
from bascule.manifests import (
    ANNOTATION_CLAIMED,
    LABEL_RELEASE,
    idle_color,
    owned_labels,
    recolored,
    render_secret,
    render_service,
    restored_service,
    secret_refs,
    selector,
    stale_secrets,
)
from bascule.readiness import Verdict, readiness_probed, rollout_verdict
from bascule.redact import redact
from bascule.snapshots import Snapshot
from bascule.tasks import state
from bascule.tasks.context import Env
from bascule.vocabulary import COLORS, Color

FIELD_MANAGER = "bascule"
# While every pod of the release exists, wait-ready reads its Deployment only this often: its
# verdicts (progress deadline, pods it cannot create) take far longer to matter than the few
# seconds between reads, which were one request on every change of the pods.
DEPLOYMENT_READ_SECONDS = 5.0


@dataclass(frozen=True)
class Ready:
    """Every replica of a release Ready, and the manifest digest its pods run (their
    imageID; None when the runtime reports no repository digest): read from the listing
    that found them Ready. A second list cost the switch 66-95 ms (bench/README.md): the
    API server answers a list once its watch cache has caught up with etcd."""

    summary: str
    digest: str | None


class RolloutFailed(OperationFailed):
    def __init__(self, verdict: Verdict, report: str) -> None:
        self.verdict, self.report = verdict, report
        super().__init__(verdict.reason)


@task(name="deploy-idle-color", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def apply_color(
    env: Env, color: Color, image: str, release_id: str, stored: Snapshot | None = None
) -> str | None:
    """The release's Secret and ConfigMaps, its objects kept beside the history, the shared
    objects and the color's HPA and PDB, then a server-side apply of the color's Deployment
    that reads them: idempotent requests, safe to repeat. Under an HPA the Deployment is
    applied without replicas (the HPA owns them) and started at the active color's count.
    Returns the digest of the objects kept (None: not kept, see ``state.store_objects``).
    ``stored``: a rollback's, the objects an earlier release applied, as they were (its
    Secret and ConfigMaps are the ones that release's pods read, kept while the history
    holds it)."""
    if stored is None:
        write_secret(env)
        write_config_maps(env)
        secret = env.release_secret
        obj = _render(env, color, image, release_id)
        per_color = tuple(o.data for o in env.workload.per_color)
        service: Mapping[str, Any] | None = render_service(
            env.cfg, env.templates, role="active", color=color, image=image
        )
        snapshot = Snapshot(obj, secret.name if secret else None, per_color, service)
    else:
        obj = recolored(stored.deployment, env.cfg, color=color, release_id=release_id)
        # Its Service as this release applies it; none if it was stored before they were.
        service = (
            None
            if stored.service is None
            else restored_service(stored.service, env.cfg, role="active", color=color, image=image)
        )
        snapshot = Snapshot(obj, stored.secret, stored.per_color, service)
    digest = state.store_objects(env, release_id, snapshot)
    for shared in env.workload.shared:
        rendered = w.render_shared(env.cfg, shared)
        env.kube.apply(w.path(env.ns, rendered), rendered, FIELD_MANAGER)
    # The release's own HPA and PDB (a rollback's: as that release had them); the color's
    # ones of kinds it no longer has go, before its Deployment is applied.
    for each in snapshot.per_color:
        rendered = w.render_per_color(env.cfg, each, color)
        env.kube.apply(w.path(env.ns, rendered), rendered, FIELD_MANAGER)
    for stale in w.stale_per_color(env.ns, env.app, color, snapshot.per_color):
        env.kube.delete(stale)  # one never made is fine
    deployment = dict(snapshot.deployment)
    autoscaler = w.autoscaler_of(snapshot.per_color)
    if autoscaler is not None:
        deployment["spec"] = {k: v for k, v in deployment["spec"].items() if k != "replicas"}
        start = start_replicas(env, color, autoscaler)
    env.kube.apply(env.deployment(color), deployment, FIELD_MANAGER)
    if autoscaler is not None:
        # Not in the apply, so Bascule's field manager never owns replicas: the HPA does.
        set_replicas(env, color, start)
    return digest


def start_replicas(env: Env, color: Color, autoscaler: Mapping[str, Any]) -> int:
    """Under an HPA, the pods ``color`` starts with: as many as the other (active) color
    runs now, within the HPA's bounds."""
    active = env.kube.get_or_none(env.deployment(idle_color(color)))
    count = (active or {}).get("spec", {}).get("replicas") or None
    return w.start_replicas(count, env.cfg.replicas, autoscaler)


def write_config_maps(env: Env) -> list[str]:
    """Creates the release's immutable ConfigMaps (those its pods read) unless they exist:
    named by their content, an existing one holds this very content."""
    names = []
    for obj in w.render_config_maps(env.cfg, env.workload):
        try:
            env.kube.create(k.configmaps(env.ns), obj, idempotent=True)
        except KubeError as exc:
            if exc.status != 409:
                raise
        names.append(str(obj["metadata"]["name"]))
    return names


def prune_config_maps(env: Env) -> list[str]:
    """Deletes the per-release ConfigMaps no Deployment and no kept release (whose stored
    objects are left once ``state.prune_objects`` ran) reads; returns their names."""
    labels = {**owned_labels(env.app, env.name), w.LABEL_RELEASE_CONFIG: "true"}
    listing = env.kube.get(k.configmaps(env.ns), labelSelector=k.selector_string(labels))
    if not listing["items"]:
        return []
    in_use: set[str] = set()
    for snapshot in state.all_stored_objects(env):
        in_use |= w.config_refs(snapshot.deployment)
    for color in COLORS:
        in_use |= w.config_refs(env.kube.get_or_none(env.deployment(color)))
    stale = w.stale_config_maps((cm["metadata"]["name"] for cm in listing["items"]), in_use)
    for name in stale:
        env.kube.delete(k.configmaps(env.ns, name))  # one already gone is fine
    return stale


def write_secret(env: Env) -> str | None:
    """Creates the immutable Secret of the environment's secret values unless it exists: its
    name is the hash of its content, so an existing one holds these very values."""
    if not env.secrets:
        return None
    obj = render_secret(env.cfg, env.secrets)
    try:
        env.kube.create(k.secrets(env.ns), obj, idempotent=True)
    except KubeError as exc:
        if exc.status != 409:
            raise
    return str(obj["metadata"]["name"])


def prune_secrets(env: Env, keep: set[str]) -> list[str]:
    """Deletes the release Secrets no Deployment and no release in ``keep`` (those the
    history still holds) uses, of those the run saw named in the history or wrote; returns
    their names. By name: a release leaves the history in the run that adds one, which read
    it first, so no Secret needs listing (a list would return every Secret's data)."""
    seen = set(env.secrets_seen)
    if (secret := env.release_secret) is not None:
        seen.add(secret.name)
    in_use = set(keep)
    for color in COLORS:
        in_use |= secret_refs(env.kube.get_or_none(env.deployment(color)))
    stale = stale_secrets(seen, in_use)
    for name in stale:
        env.kube.delete(k.secrets(env.ns, name))  # one already gone is fine
    return stale


def _render(env: Env, color: Color, image: str, release_id: str) -> dict[str, Any]:
    return w.render_color(
        env.cfg,
        env.workload,
        color=color,
        image=image,
        release_id=release_id,
        secret=env.release_secret,
    )


def applies_unchanged(env: Env, color: Color, image: str, release_id: str) -> bool:
    """Whether applying ``image`` as ``release_id`` to ``color`` with today's configuration
    would leave the Deployment's spec as it is. A server-side dry run, as `kubectl diff`
    does: the API server raises the generation only when the spec changes."""
    live = env.kube.get_or_none(env.deployment(color))
    if live is None:
        return False
    obj = _render(env, color, image, release_id)
    dry = env.kube.apply(env.deployment(color), obj, FIELD_MANAGER, dryRun="All")
    return bool(dry["metadata"].get("generation") == live["metadata"].get("generation"))


@task(name="scale", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=1)
def scale(env: Env, color: Color, replicas: int) -> None:
    set_replicas(env, color, replicas)


def set_replicas(env: Env, color: Color, replicas: int, read_version: str | None = None) -> None:
    """Scales ``color`` to ``replicas`` by a merge patch (so no apply owns the count).
    ``read_version``: the resourceVersion the decision read; the API answers 409 (raised)
    if the Deployment changed since."""
    body: dict[str, Any] = {"spec": {"replicas": replicas}}
    if read_version is not None:
        body["metadata"] = {"resourceVersion": read_version}
    try:
        env.kube.patch(env.deployment(color), body, idempotent=True)
    except KubeError as exc:
        if exc.status != 404:  # nothing to scale is already scaled
            raise


def claim(env: Env, color: Color, by: str, read_version: str | None) -> None:
    """Marks ``color``'s Deployment as claimed by the rollback ``by``, before it sends traffic
    back there: a retire of that color (outside the lock) that read it earlier now conflicts,
    and one that reads it later sees the mark. ``read_version``: the resourceVersion the
    rollback planned on; the API answers 409 (raised) if the color changed since."""
    body = {"metadata": {"annotations": {ANNOTATION_CLAIMED: by}, "resourceVersion": read_version}}
    env.kube.patch(env.deployment(color), body, idempotent=True)


def pods_left(env: Env, color: Color, timeout: float) -> int:
    """Waits up to ``timeout`` until no pod of ``color`` is left (drained and gone); the
    number still there."""
    labels = k.selector_string(selector(env.app, color))
    deadline = env.kube.active_time() + timeout
    while True:
        left = len(env.kube.get(k.pods(env.ns), labelSelector=labels)["items"])
        if not left or env.kube.active_time() >= deadline:
            return left
        time.sleep(0.5)


def _readiness_failures(env: Env, pod_names: set[str]) -> tuple[dict[str, int], str]:
    evs = env.kube.get(k.events(env.ns), fieldSelector="reason=Unhealthy")
    counts: dict[str, int] = {}
    last = ""
    for ev in evs.get("items", []):
        name = ev.get("involvedObject", {}).get("name")
        if name in pod_names and "Readiness probe failed" in ev.get("message", ""):
            counts[name] = counts.get(name, 0) + int(ev.get("count") or 1)
            last = redact(ev["message"])
    return counts, last


def _events(env: Env, kind: str, name: str) -> list[str]:
    evs = env.kube.get(k.events(env.ns), fieldSelector=f"involvedObject.name={name}")
    lines = [f"{kind} {name} events:"]
    for ev in evs.get("items", [])[-8:]:
        message = redact(ev.get("message", "").strip())
        lines.append(f"  {ev.get('type')} {ev.get('reason')}: {message}")
    return lines


def failure_report(env: Env, pods: list[dict[str, Any]], verdict: Verdict) -> str:
    """Events of the ReplicaSets and pods a failure is about, and the pods' log tails, for
    the run's report."""
    lines: list[str] = []
    for name in verdict.replicasets[:2]:
        lines.extend(_events(env, "replicaset", name))
    for name in verdict.pods[:2]:
        lines.extend(_events(env, "pod", name))
        pod = next((p for p in pods if p["metadata"]["name"] == name), {})
        if not pod.get("spec", {}).get("nodeName"):
            continue  # never scheduled: no container, no log
        restarted = any(
            cs.get("restartCount", 0) for cs in pod.get("status", {}).get("containerStatuses", [])
        )
        try:
            tail = env.kube.get_text(
                f"{k.pods(env.ns)}/{name}/log",
                tailLines="20",
                previous="true" if restarted else "false",
            ).strip()
        except KubeError as exc:  # a log tail is a courtesy, never a reason to fail differently
            tail = f"(no log: {exc})"
        lines.append(f"pod {name} log tail:")
        lines.extend(f"  {line}" for line in redact(tail).splitlines()[-20:])
    return "\n".join(lines)


@task(name="wait-ready", cache_policy=NO_CACHE)
def wait_ready(env: Env, color: Color, release_id: str, replicas: int | None = None) -> Ready:
    """Waits until every replica of the release is Ready, watching its pods; fails fast on
    CrashLoopBackOff, image errors, repeated readiness failures, a ReplicaSet that cannot
    create pods, pods no node takes within the grace, and ProgressDeadlineExceeded.
    ``replicas``: how many it runs, when not the configured number (a rollback's stored
    objects say theirs)."""
    want = env.cfg.replicas if replicas is None else replicas
    if replicas is None and env.workload.autoscaler is not None:
        # The HPA's count, which the apply started at the active color's.
        want = env.kube.get(env.deployment(color))["spec"].get("replicas", 1)
    labels = {**selector(env.app, color), LABEL_RELEASE: release_id}
    sel = k.selector_string(labels)
    limit = env.cfg.rollout.readiness_failure_limit
    deadline = env.kube.active_time() + env.cfg.rollout.ready_timeout_seconds
    dep: dict[str, Any] = {}
    dep_read = -math.inf
    while True:
        listing = env.kube.get(k.pods(env.ns), labelSelector=sel)
        pods = [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]
        missing = len(pods) < want
        if missing or env.kube.active_time() - dep_read >= DEPLOYMENT_READ_SECONDS:
            dep, dep_read = env.kube.get(env.deployment(color)), env.kube.active_time()
        # Pods that could not be created leave only their ReplicaSet to say why.
        replicasets = (
            env.kube.get(k.replicasets(env.ns), labelSelector=sel)["items"] if missing else []
        )
        counts: dict[str, int] = {}
        last_probe = ""
        if limit and any(readiness_probed(p) for p in pods):  # else no event to read
            counts, last_probe = _readiness_failures(env, {p["metadata"]["name"] for p in pods})
        verdict = rollout_verdict(
            dep,
            pods,
            replicasets=replicasets,
            readiness_failures=counts,
            max_readiness_failures=limit,
            unschedulable_grace_seconds=env.cfg.rollout.unschedulable_grace_seconds,
            now=time.time(),  # pods' condition times are the API server's wall clock
        )
        if verdict.state == "failed":
            if "readiness" in verdict.reason:
                verdict = replace(verdict, reason=f"{verdict.reason} — {last_probe}")
            raise RolloutFailed(verdict, failure_report(env, pods, verdict))
        ready = [p for p in pods if _ready(p)]
        # Every pod of this release Ready is the fact that matters; the Deployment's status
        # counters follow it a moment later and only slow the switch down.
        if len(ready) >= want:
            summary = f"{len(ready)}/{want} pods of {release_id} ready"
            return Ready(summary, pods_digest(pods, env.cfg.workload.container))
        remaining = deadline - env.kube.active_time()
        if remaining <= 0:
            names = [p["metadata"]["name"] for p in pods if not _ready(p)]
            v = Verdict(
                "failed",
                f"not Ready within {env.cfg.rollout.ready_timeout_seconds} s: "
                f"{verdict.reason}" + (f" — {last_probe}" if last_probe else ""),
                names,
            )
            raise RolloutFailed(v, failure_report(env, pods, v))
        # Sleep until something about these pods changes, at most a few seconds.
        env.kube.wait_for_change(
            k.pods(env.ns),
            listing["metadata"]["resourceVersion"],
            min(remaining, 3),
            labelSelector=sel,
        )


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )
