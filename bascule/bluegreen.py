"""Blue-green decisions on observed cluster state. Pure: no I/O, no clock.

Like a controller's reconcile loop, every decision starts from what the cluster says
(which color the active Service selects, what each colored Deployment runs, how far the
last recorded release got) rather than from what a process remembers, so any step can be
re-run after a crash and lands on all-old or all-new serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bascule.history import Release, Result
from bascule.vocabulary import Color


@dataclass(frozen=True)
class ColorState:
    color: Color
    exists: bool = False
    image: str | None = None
    release: str | None = None
    replicas: int = 0  # desired
    ready: int = 0
    # The controller has acted on the latest spec and no pod of an older one is left.
    settled: bool = False
    # The Deployment's resourceVersion as read: a change decided on this reading carries it,
    # so that it conflicts if someone changed the color since.
    version: str | None = None
    # The last rollback that claimed the color to send traffic back to it (its release id).
    claimed_by: str | None = None

    @property
    def serving_ready(self) -> bool:
        """Fully up: every desired replica ready, and at least one desired."""
        return self.exists and self.replicas > 0 and self.ready >= self.replicas


@dataclass(frozen=True)
class Observed:
    active: Color | None  # color the active Service selects; None before the first deploy
    colors: dict[Color, ColorState]
    in_flight: Release | None = None
    releases: tuple[Release, ...] = ()  # the history as read, newest last

    def color(self, name: Color) -> ColorState:
        return self.colors.get(name) or ColorState(name)

    @property
    def active_state(self) -> ColorState | None:
        return self.color(self.active) if self.active else None


@dataclass(frozen=True)
class Recovery:
    """What to do about a release that a dead run left half-done."""

    switch_to: Color | None  # PATCH the active Service back to this color first
    scale_down: Color | None  # then scale this color to zero
    result: Result  # how the interrupted release is recorded
    reason: str


def recover(obs: Observed, aborted: str | None = None) -> Recovery | None:
    """Put right a release whose run died. Before the switch nothing served the new color:
    drop it. After the switch but before verification finished, the new color was never
    proven: go back to the old one if it still runs at full size (it does unless a person
    scaled it), else keep the new one rather than serve nothing. A verified release is
    recorded done before its old color's delayed scale-down, so it never needs recovery.

    ``aborted``: who asked the run to stop (``bascule abort``, a cancel in Prefect), when
    that is how it ended: the same reconcile, recorded "aborted" with the request."""
    rel = obs.in_flight
    if rel is None:
        return None
    new = rel.color
    ended: Result = "aborted" if aborted else "interrupted"
    how = f"the run was stopped ({aborted})" if aborted else "the run died"
    if rel.phase in ("planned", "deploying", "checking", "awaiting-approval"):
        if obs.active == new:
            when = f"between the switch to {new} and recording it"
            return _back_to_old(obs, rel, when, how, ended)
        return Recovery(
            None,
            new if obs.color(new).replicas else None,
            ended,
            f"{how} during {rel.phase}; traffic never moved",
        )
    if rel.kind == "rollback" and rel.previous_color:
        # A switch-back goes to a release that was verified before: finish it, never
        # return to the version being rolled away from.
        return Recovery(
            None if obs.active == new else new,
            rel.previous_color,
            "succeeded",
            f"the rollback to {new} was switched before the run died; finished it",
        )
    when = f"after the switch to {new}, before verification finished"
    return _back_to_old(obs, rel, when, how, ended)


def _back_to_old(obs: Observed, rel: Release, when: str, how: str, ended: Result) -> Recovery:
    old = rel.previous_color
    if old and obs.color(old).serving_ready:
        switch = old if obs.active != old else None
        return Recovery(switch, rel.color, ended, f"{how} {when}; traffic returned to {old}")
    return Recovery(
        None,
        None,
        ended,
        f"{how} {when}; {old or 'no older color'} was not running, so the new color keeps serving",
    )


Action = Literal["switch-back", "redeploy"]


def undone_by_reconcile(obs: Observed, reconciled: Release | None) -> bool:
    """Whether the reconcile a rollback started with (``recover``) was the rollback: the
    release a dead run left in flight no longer serves (traffic returned, or never moved
    to it), or it was itself a rollback, which the reconcile finished. Then rolling back
    further would leave a second release behind."""
    if reconciled is None:
        return False
    return reconciled.kind == "rollback" or obs.active != reconciled.color


def keep_old_color(seen: ColorState, now: ColorState, active: Color | None) -> str | None:
    """Why the old color ``seen`` (as the finished run found it, under the lock) must not go
    to zero now that the scale-down delay passed, outside the lock; None: scale it down.
    ``now`` is read after the lock was released: a rollback claimed it (and may be about to
    switch back, or just did), or the next deploy put a release of its own on it."""
    if not now.replicas:
        return "is already at zero"
    if active == now.color:
        return "kept: it is active again"
    if now.claimed_by != seen.claimed_by:
        return f"kept: rollback {now.claimed_by} claimed it"
    if now.release != seen.release:
        return f"kept: it was reused by release {now.release}"
    return None


def rollback_plan(obs: Observed, target: Release) -> Action:
    """Rolling back to ``target``: one PATCH while its color still runs its image at full
    size, otherwise redeploy it to the idle color first."""
    state = obs.color(target.color)
    if target.color != obs.active and state.serving_ready and state.image == target.image:
        return "switch-back"
    return "redeploy"


def drift(obs: Observed, recorded: Release | None, replicas: int | None) -> list[str]:
    """How what serves differs from the release the history says serves, run at the
    configured number of ``replicas`` (None: an HPA's to decide)."""
    if recorded is None:
        return ["no release is recorded as serving"]
    found = []
    if obs.active != recorded.color:
        found.append(f"the active Service selects {obs.active}, recorded {recorded.color}")
    state = obs.color(recorded.color)
    if state.image != recorded.image:
        found.append(f"{recorded.color} runs {state.image}, recorded {recorded.image}")
    if state.release != recorded.id:
        found.append(f"{recorded.color} carries release {state.release}, recorded {recorded.id}")
    if replicas is not None and state.replicas != replicas:
        found.append(f"{recorded.color} is scaled to {state.replicas}, configured {replicas}")
    if not state.serving_ready:
        found.append(f"{recorded.color} has {state.ready}/{state.replicas} ready")
    return found


def already_serving(
    obs: Observed, image: str, recorded: Release | None, spec_unchanged: bool
) -> bool:
    """A deploy of ``image`` would change nothing, as ``kubectl apply`` of the same object
    does not: the active color runs ``image`` as the verified release the history says
    serves, every replica Ready and rolled out, no release in flight, and applying the
    configuration again would leave its spec as it is (``spec_unchanged``)."""
    active = obs.active_state
    return (
        obs.in_flight is None
        and active is not None
        and active.image == image
        and active.serving_ready
        and active.settled
        and recorded is not None
        and recorded.image == image
        and recorded.id == active.release
        and spec_unchanged
    )


def contract_blocker(
    obs: Observed, release: Release, old: Color | None, old_pods: int
) -> str | None:
    """Why a release's contract migrations may not run now, or None when they may: the new
    color must still be the active one with this release, and the old one gone to the last
    pod (a draining pod still reads the schema)."""
    new = obs.color(release.color)
    if obs.active != release.color or new.release != release.id:
        return f"{release.color} is no longer the active color of release {release.id}"
    if old is not None and (obs.color(old).replicas or old_pods):
        return f"the old color {old} still runs ({old_pods} pods)"
    return None
