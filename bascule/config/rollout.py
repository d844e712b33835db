"""`rollout:`, the timing of bringing up the idle color and retiring the old one, and
`history:`, how many releases are kept to roll back to."""

from __future__ import annotations

from pydantic import Field

from bascule.config.base import Section


class RolloutConfig(Section):
    """Timing of bringing up the idle color and retiring the old one."""

    ready_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="Time the idle color has to become fully Ready before the deploy fails.",
    )
    progress_deadline_seconds: int = Field(
        default=120,
        ge=1,
        description=(
            "The Deployment's progressDeadlineSeconds: Kubernetes reports ProgressDeadlineExceeded "
            "when a rollout makes no progress this long, and the deploy fails fast on it."
        ),
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        description=(
            "How long the old color keeps full size after the switch, so a rollback is one "
            "Service patch. At least verification.window_seconds."
        ),
    )
    readiness_failure_limit: int = Field(
        default=10,
        ge=0,
        description=(
            "Failed readiness probes of one new pod after which the deploy stops waiting and "
            "fails (0: wait for ready_timeout_seconds)."
        ),
    )
    unschedulable_grace_seconds: int = Field(
        default=30,
        ge=0,
        description=(
            "How long a new pod may wait for a node (the scheduler's FailedScheduling: "
            "insufficient cpu or memory, too many pods, taints, unbound volumes) before the "
            "deploy fails; leaves time for a cluster autoscaler to add one."
        ),
    )
    lock_timeout_seconds: int = Field(
        default=0,
        ge=0,
        description=(
            "How long a deploy waits for another live deploy of the same app and environment "
            "to finish; 0 refuses as soon as the holder shows it is alive (it renews its "
            "Lease every 2 s), with a message naming it. A dead holder's lock is taken over "
            "whatever this says, within 15 s of its death."
        ),
    )


class HistoryConfig(Section):
    """The release history kept in the cluster per app and environment."""

    limit: int = Field(default=20, ge=1, le=200, description="Releases kept, newest first.")


# squawk rules about style rather than what the old and the new version may share: shown, not
