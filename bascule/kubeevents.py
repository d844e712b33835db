"""The Kubernetes Events that tell a run's story on the app's Deployments, as Argo Rollouts
tells a rollout's on its Rollout: ``kubectl describe deployment <app>-<color>`` lists the
stages of each deploy and rollback of that color, with the release and its image.

Which stage says what, on which color (``Note``), and the Event object itself (``event``):
pure. tasks/kubeevents.py posts them, best effort.

core/v1 Events rather than events.k8s.io/v1: both are one resource in the API server, but
``kubectl describe`` and ``kubectl get events`` read core/v1 (LAST SEEN is its
``lastTimestamp``), the failure report already lists core/v1 Events, and one RBAC rule of
the core group grants the create. The ``eventTime`` and reporting fields are set as well,
so events.k8s.io/v1 readers see the same Event, ordered to the microsecond.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bascule.history import Release
from bascule.manifests import deployment_name, object_labels
from bascule.redact import redact
from bascule.vocabulary import Color

# Who reports the Events (``reportingController``, ``source.component``): a qualified name.
REPORTER = "bascule.io/bascule"
COMPONENT = "bascule"
# What the API server accepts, in bytes: a message (events.k8s.io's note), a reporter.
MESSAGE_LIMIT, INSTANCE_LIMIT = 1024, 128
# The stages whose step says the most in its own detail, and the reason each is told by.
STEP_REASONS = {
    "wait-ready": "ColorReady",
    "analysis-preview": "AnalysisPassed",
    "verify": "Verified",
}


@dataclass(frozen=True)
class Note:
    """One Event to post: on ``color``'s Deployment, why (a CamelCase reason) and what
    (a short message naming the release and its image); Warning when something failed.
    ``image``: the release's, for the Event's version label."""

    color: Color
    reason: str
    message: str
    warning: bool = False
    image: str | None = None


def _kind(release: Release) -> str:
    """``Deploy``, ``Rollback``, ``Redeploy``: the first word of a run's reasons."""
    return release.kind.title().replace("-", "")


def _what(release: Release) -> str:
    return f"release {release.id} ({release.image})"


def _step_detail(release: Release, stage: str) -> str:
    last = release.steps[-1] if release.steps else None
    return last.detail if last is not None and last.name == stage else ""


def stage_notes(stage: str, release: Release, payload: Mapping[str, Any]) -> list[Note]:
    """The Events of a stage of a run (a ``Run.event`` stage, or a step's name once it is
    done), in the order to post them; none for a stage that tells nothing new."""
    new, old, image = release.color, release.previous_color, release.image
    what, kind = _what(release), _kind(release)
    reason = str(payload.get("reason") or "")

    def note(color: Color, why: str, message: str, warning: bool = False) -> Note:
        return Note(color, why, message, warning, image)

    if stage == "started":
        serving = f"; {release.previous_image} serves on {old}" if old else ""
        return [note(new, f"{kind}Started", f"{kind.lower()} of {what} to {new}{serving}")]
    if stage in STEP_REASONS:
        detail = _step_detail(release, stage)
        return [note(new, STEP_REASONS[stage], f"{what}: {detail}" if detail else what)]
    if stage == "awaiting-approval":
        return [note(new, "AwaitingApproval", f"{what} on preview awaits approval")]
    if stage == "approved":
        by = f" by {payload['approver']}" if payload.get("approver") else ""
        return [note(new, "Approved", f"{what} approved{by}")]
    if stage in ("rejected", "approval-timed-out"):
        why = "Rejected" if stage == "rejected" else "ApprovalTimedOut"
        return [note(new, why, f"{what} not switched: {reason}", warning=True)]
    if stage == "switched":
        moved = f"the active Service now selects {new}: {what} serves"
        return [note(c, "Switched", moved) for c in (new, old) if c]
    if stage == "succeeded":
        return [note(new, f"{kind}Succeeded", f"{what} serves, verified")]
    if stage == "failed":
        return [note(new, f"{kind}Failed", f"{what} failed: {reason}", warning=True)]
    if stage == "rolled-back":
        return _rolled_back(release, reason, payload.get("seconds"))
    if stage == "scale-down-bad" and old:  # a rollback's: the color it left
        return [scaled_down(old, f"{release.previous_image} no longer serves", image)]
    return []


def _rolled_back(release: Release, reason: str, seconds: Any) -> list[Note]:
    """A deploy that failed after the switch went back to the old color (Warning); a
    rollback run returned to the release it names (Normal)."""
    took = f" in {seconds:.2f} s" if isinstance(seconds, int | float) else ""
    back: Color | None = release.color
    left: Color | None = release.previous_color
    warning = release.kind != "rollback"
    message = f"traffic back on {back}{took}: {_what(release)} serves again"
    if warning:
        back, left = left, back
        message = f"traffic back on {back}{took}, away from {_what(release)}: {reason}"
    return [Note(c, "RolledBack", message, warning, release.image) for c in (left, back) if c]


def reconciled(release: Release, reason: str, switched_to: Color | None) -> list[Note]:
    """A release a run left in flight (killed, cancelled), put right by the next run: told
    on its color, and on the color traffic went back to (Warning: a run died)."""
    message = f"{_what(release)}, left in phase {release.phase} by a run that died: {reason}"
    colors = dict.fromkeys(c for c in (release.color, switched_to) if c)
    return [Note(c, "Reconciled", message, True, release.image) for c in colors]


def checks_note(release: Release, name: str, failed: list[str], count: int) -> Note:
    """A group of checks (``name``: pre-switch health, smoke tests, ...) of the release on
    its color passed, or which of them failed."""
    if failed:
        message = f"{name} of {_what(release)} failed: {'; '.join(failed)}"
        return Note(release.color, "ChecksFailed", message, True, release.image)
    plural = "s" * (count != 1)
    message = f"{name} of {_what(release)} passed ({count} check{plural})"
    return Note(release.color, "ChecksPassed", message, False, release.image)


def verification_failed(release: Release, reason: str) -> Note:
    """The release's analysis or post-switch verification failed (what happens next, a
    rollback or no switch, is the run's next Event)."""
    message = f"{_what(release)}: {reason}"
    return Note(release.color, "VerificationFailed", message, True, release.image)


def scaled_down(color: Color, why: str, image: str | None = None) -> Note:
    return Note(color, "ScaledDown", f"scaled to zero: {why}", False, image)


def event(
    note: Note,
    *,
    app: str,
    environment: str,
    namespace: str,
    uid: str | None,
    at: datetime,
    instance: str,
    action: str,
) -> dict[str, Any]:
    """The core/v1 Event of ``note`` on its Deployment (``uid``: the Deployment's, which
    ``kubectl describe`` selects its Events by), happened ``at``; ``instance``: who reports
    it (the worker's host), ``action``: what it was doing (Deploy, Rollback)."""
    name = deployment_name(app, note.color)
    involved = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "namespace": namespace}
    if uid:
        involved["uid"] = uid
    at = at.astimezone(UTC)
    seconds = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    micros = int(at.timestamp() * 1_000_000)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            # As client-go names Events: the object's name and the time, in hex.
            "name": f"{name}.{micros:x}",
            "namespace": namespace,
            "labels": object_labels(app, environment, note.image),
        },
        "involvedObject": involved,
        "reason": note.reason,
        "message": fit(redact(note.message), MESSAGE_LIMIT),
        "type": "Warning" if note.warning else "Normal",
        "count": 1,
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "source": {"component": COMPONENT},
        "reportingComponent": REPORTER,
        "reportingInstance": fit(instance, INSTANCE_LIMIT) or COMPONENT,
        "action": action,
    }


def fit(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8, a cut marked with an ellipsis."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - len("…".encode())].decode(errors="ignore") + "…"
