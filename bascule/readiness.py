"""Is a rollout done, still going, or hopeless? A pure verdict on a Deployment and its pods.

Waiting fails fast: a pod in CrashLoopBackOff or unable to get its image will not heal by
itself, so the pipeline stops at once with the reason instead of sitting out a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Verdict:
    state: Literal["progressing", "ready", "failed"]
    reason: str = ""
    pods: list[str] = field(default_factory=list)  # pods the reason is about

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
        why = HOPELESS_WAITING.get(waiting.get("reason", ""))
        if why:
            msg = waiting.get("message", "")
            return f"{waiting['reason']}: {why}" + (f" ({msg})" if msg else "")
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        if terminated and cs.get("restartCount", 0) >= readiness_grace_restarts:
            return (
                f"container {cs.get('name')} restarted {cs['restartCount']} times, last exit "
                f"code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})"
            )
    return None


def rollout_verdict(
    deployment: Obj,
    pods: list[Obj],
    readiness_failures: dict[str, int] | None = None,
    max_readiness_failures: int = 0,
) -> Verdict:
    """Verdict for a Deployment expected to reach spec.replicas ready pods of its current
    template. ``readiness_failures`` counts failed readiness probes per pod (from events);
    at ``max_readiness_failures`` (0 = no limit) the pod is judged unable to get ready."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    meta = deployment.get("metadata", {})
    want = spec.get("replicas", 1)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    for cond in status.get("conditions", []) if observed else []:
        # Only a condition about the current template is a verdict on it.
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Verdict("failed", f"ProgressDeadlineExceeded: {cond.get('message', '')}")
    problems = [(p["metadata"]["name"], pod_problem(p)) for p in pods]
    failing = [(name, why) for name, why in problems if why]
    if failing:
        return Verdict("failed", failing[0][1] or "", [name for name, _ in failing])
    if max_readiness_failures and readiness_failures:
        stuck = sorted(n for n, c in readiness_failures.items() if c >= max_readiness_failures)
        if stuck:
            return Verdict(
                "failed",
                f"readiness probe failed {readiness_failures[stuck[0]]} times on {stuck[0]}",
                stuck,
            )
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
