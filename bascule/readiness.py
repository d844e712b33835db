"""Is a rollout done, still going, or hopeless? A pure verdict on a Deployment and its pods.

Waiting fails fast: a pod in CrashLoopBackOff or unable to get its image, or a ReplicaSet that
cannot create pods at all, will not heal by itself, so the pipeline stops at once with the reason
instead of sitting out a timeout. Pods no node can take get a grace first, as a cluster
autoscaler may add a node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Obj = dict[str, Any]

# Waiting reasons that never resolve on their own within a deploy.
HOPELESS_WAITING = {
    "CrashLoopBackOff": "the container keeps crashing",
    "ImagePullBackOff": "the image cannot be pulled",
    "ErrImagePull": "the image cannot be pulled",
    "ErrImageNeverPull": "the image is not on the node and the pull policy is Never",
    "InvalidImageName": "the image reference is invalid",
    "CreateContainerConfigError": "the container configuration is invalid",
    "CreateContainerError": "the container cannot be created",
    "RunContainerError": "the container cannot be started",
}
# ... except the kubelet's own catching up: a Secret or ConfigMap created moments before the pod
# is not in its cache yet ("failed to sync secret cache"), and it retries by itself.
TRANSIENT_MESSAGE = "failed to sync"


@dataclass(frozen=True)
class Verdict:
    state: Literal["progressing", "ready", "failed"]
    reason: str = ""
    pods: list[str] = field(default_factory=list)  # pods the reason is about
    replicasets: list[str] = field(default_factory=list)  # ReplicaSets the reason is about

    @property
    def done(self) -> bool:
        return self.state != "progressing"


def pod_problem(pod: Obj, readiness_grace_restarts: int = 2) -> str | None:
    """Why this pod will not become ready, or None while it still may."""
    status = pod.get("status", {})
    if status.get("phase") == "Failed":
        return f"pod failed: {status.get('reason') or status.get('message') or 'unknown'}"
    for cs in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
        waiting = cs.get("state", {}).get("waiting") or {}
        # Any default that is no reason in the table is the same (its mutants are equivalent).
        why = HOPELESS_WAITING.get(waiting.get("reason", ""))  # pragma: no mutate
        msg = waiting.get("message", "")
        if why and TRANSIENT_MESSAGE not in msg:
            return f"{waiting['reason']}: {why}" + (f" ({msg})" if msg else "")
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        if terminated and cs.get("restartCount", 0) >= readiness_grace_restarts:
            return (
                f"container {cs.get('name')} restarted {cs['restartCount']} times, last exit "
                f"code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})"
            )
    return None


def readiness_probed(pod: Obj) -> bool:
    """A container of the pod is probed for readiness and not ready: only then can failed
    readiness probes be counted (the kubelet probes readiness once a container started,
    that is once its startup probe, if any, passed)."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return any(c.get("started") and not c.get("ready") for c in statuses)


def replica_failure(deployment: Obj, replicasets: Sequence[Obj]) -> Verdict | None:
    """Failed when the release's ReplicaSets (or the Deployment, which reports its new
    ReplicaSet's) cannot create pods: quota exceeded, admission denied, invalid spec. No pod
    exists to report such a failure, so without this a rollout sits out its progress deadline."""
    meta, status = deployment.get("metadata", {}), deployment.get("status", {})
    sources = [("ReplicaSet", rs) for rs in replicasets]
    if status.get("observedGeneration", 0) >= meta.get("generation", 0):
        sources.append(("Deployment", deployment))  # only a condition about the current template
    for kind, obj in sources:
        for cond in obj.get("status", {}).get("conditions", []):
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                name = obj["metadata"]["name"]
                return Verdict(
                    "failed",
                    f"ReplicaFailure ({cond.get('reason') or 'unknown'}): {kind} {name} cannot "
                    f"create pods: {cond.get('message', '').strip()}",
                    replicasets=[name] if kind == "ReplicaSet" else [],
                )
    return None


def _unschedulable_since(pod: Obj) -> tuple[float, str] | None:
    """When the scheduler first found no node for this pod (API server clock) and why."""
    if pod.get("status", {}).get("nominatedNodeName"):
        return None  # preempting lower-priority pods: it gets that node once they are gone
    for cond in pod.get("status", {}).get("conditions", []):
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            stamp = cond.get("lastTransitionTime")
            since = datetime.fromisoformat(stamp).timestamp() if stamp else math.inf
            return since, cond.get("message", "").strip()
    return None


def unschedulable(pods: list[Obj], want: int, grace_seconds: float, now: float) -> Verdict | None:
    """Failed once a pod has found no node for ``grace_seconds`` (time for a cluster
    autoscaler to add one), naming the scheduler's message and how many pods wait; else None."""
    waiting: list[tuple[float, str, str]] = []
    for pod in pods:
        found = _unschedulable_since(pod)
        if found:
            waiting.append((*found, pod["metadata"]["name"]))
    if not waiting:
        return None
    since, message, _ = min(waiting)
    if now - since < grace_seconds:
        return None
    return Verdict(
        "failed",
        f"FailedScheduling: {len(waiting)} of {want} pods cannot be scheduled, the first for "
        f"{now - since:.0f} s (grace {grace_seconds:g} s): {message}",
        sorted(name for _, _, name in waiting),
    )


def rollout_verdict(
    deployment: Obj,
    pods: list[Obj],
    *,
    replicasets: Sequence[Obj] = (),
    readiness_failures: dict[str, int] | None = None,
    max_readiness_failures: int = 0,
    unschedulable_grace_seconds: float | None = None,
    # Read only with unschedulable_grace_seconds, whose callers pass the time: the default's
    # value cannot matter (its mutants are equivalent).
    now: float = 0.0,  # pragma: no mutate
) -> Verdict:
    """Verdict for a Deployment expected to reach spec.replicas ready pods of its current
    template. ``replicasets`` are the release's ReplicaSets, read for a failure to create pods.
    ``readiness_failures`` counts failed readiness probes per pod (from events);
    at ``max_readiness_failures`` (0 = no limit) the pod is judged unable to get ready.
    With ``unschedulable_grace_seconds``, a pod no node could take for that long (by the
    Unix time ``now``) fails the rollout."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    meta = deployment.get("metadata", {})
    want = spec.get("replicas", 1)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    for cond in status.get("conditions", []) if observed else []:
        # Only a condition about the current template is a verdict on it.
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Verdict("failed", f"ProgressDeadlineExceeded: {cond.get('message', '')}")
    cannot_create = replica_failure(deployment, replicasets)
    if cannot_create:
        return cannot_create
    failing = [(p["metadata"]["name"], why) for p in pods if (why := pod_problem(p))]
    if failing:
        return Verdict("failed", failing[0][1], [name for name, _ in failing])
    if max_readiness_failures and readiness_failures:
        stuck = sorted(n for n, c in readiness_failures.items() if c >= max_readiness_failures)
        if stuck:
            return Verdict(
                "failed",
                f"readiness probe failed {readiness_failures[stuck[0]]} times on {stuck[0]}",
                stuck,
            )
    if unschedulable_grace_seconds is not None:
        unplaced = unschedulable(pods, want, unschedulable_grace_seconds, now)
        if unplaced:
            return unplaced
    current = (
        observed
        and status.get("updatedReplicas", 0) == want
        and status.get("readyReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )
    if current:
        return Verdict("ready", f"{want}/{want} ready")
    return Verdict(
        "progressing",
        f"{status.get('readyReplicas', 0)}/{want} ready, "
        f"{status.get('updatedReplicas', 0)} updated",
    )
