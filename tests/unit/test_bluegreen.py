"""Blue-green decisions on observed state: recovering a release a dead run left behind, and
choosing how to roll back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bascule.bluegreen import (
    ColorState,
    Observed,
    Recovery,
    already_serving,
    contract_blocker,
    drift,
    keep_old_color,
    recover,
    rollback_plan,
    undone_by_reconcile,
)
from bascule.history import Phase, Release
from bascule.vocabulary import Color

PRE_SWITCH: list[Phase] = ["planned", "deploying", "checking", "awaiting-approval"]


def release(
    phase: Phase = "planned",
    *,
    color: str = "green",
    previous_color: str | None = "blue",
    image: str = "shop:v2",
    kind: str = "deploy",
) -> Release:
    return Release(
        id="r20250301120000-a1b2c3",
        image=image,
        color=color,
        previous_image="shop:v1" if previous_color else None,
        previous_color=previous_color,
        started="2025-03-01T12:00:00Z",
        kind=kind,
        phase=phase,
    )


def running(color: str, image: str, replicas: int = 3, ready: int | None = None) -> ColorState:
    return ColorState(
        color,
        exists=True,
        image=image,
        release=f"r-{image}",
        replicas=replicas,
        ready=replicas if ready is None else ready,
        settled=True,
    )


def observed(
    active: str | None,
    *,
    blue: ColorState | None = None,
    green: ColorState | None = None,
    in_flight: Release | None = None,
) -> Observed:
    colors = {c.color: c for c in (blue, green) if c is not None}
    return Observed(active, colors, in_flight)


OLD_UP = running("blue", "shop:v1")
OLD_DOWN = running("blue", "shop:v1", replicas=0)
NEW_UP = running("green", "shop:v2")


# --- ColorState / Observed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "serving"),
    [
        (running("blue", "shop:v1"), True),
        (running("blue", "shop:v1", replicas=3, ready=2), False),
        (running("blue", "shop:v1", replicas=0), False),
        (ColorState("blue", exists=False, replicas=3, ready=3), False),
    ],
    ids=["full", "partly-ready", "scaled-to-zero", "no-deployment"],
)
def test_serving_ready_needs_every_desired_replica(state: ColorState, serving: bool) -> None:
    assert state.serving_ready is serving


def test_observed_colors_default_to_absent() -> None:
    obs = observed(None, blue=OLD_UP)
    assert obs.color("green") == ColorState("green")
    assert obs.active_state is None
    assert observed("blue", blue=OLD_UP).active_state == OLD_UP


# --- recover ------------------------------------------------------------------------------------


def test_nothing_in_flight_needs_no_recovery() -> None:
    assert recover(observed("blue", blue=OLD_UP, green=NEW_UP)) is None


@pytest.mark.parametrize("phase", PRE_SWITCH)
def test_before_the_switch_the_new_color_is_dropped(phase: Phase) -> None:
    rec = recover(observed("blue", blue=OLD_UP, green=NEW_UP, in_flight=release(phase)))
    assert rec == Recovery(
        switch_to=None,
        scale_down="green",
        result="interrupted",
        reason=f"the run died during {phase}; traffic never moved",
    )


@pytest.mark.parametrize("phase", PRE_SWITCH)
def test_before_the_switch_a_new_color_never_scaled_up_is_left_alone(phase: Phase) -> None:
    rec = recover(observed("blue", blue=OLD_UP, in_flight=release(phase)))
    assert rec is not None
    assert (rec.switch_to, rec.scale_down, rec.result) == (None, None, "interrupted")


DIED_UNRECORDED = "the run died between the switch to green and recording it"
DIED_IN_WINDOW = "the run died after the switch to green, before verification finished"


@pytest.mark.parametrize(
    ("phase", "died"),
    [*((p, DIED_UNRECORDED) for p in PRE_SWITCH), ("switched", DIED_IN_WINDOW)],
)
def test_after_the_patch_traffic_returns_to_the_old_color_at_full_size(
    phase: Phase, died: str
) -> None:
    # For a pre-switch phase: the run died between the PATCH and recording "switched".
    rec = recover(observed("green", blue=OLD_UP, green=NEW_UP, in_flight=release(phase)))
    assert rec == Recovery(
        switch_to="blue",
        scale_down="green",
        result="interrupted",
        reason=f"{died}; traffic returned to blue",
    )


@pytest.mark.parametrize(
    "old",
    [OLD_DOWN, running("blue", "shop:v1", replicas=3, ready=1), None],
    ids=["scaled-to-zero", "partly-ready", "deleted"],
)
@pytest.mark.parametrize(
    ("phase", "died"), [("awaiting-approval", DIED_UNRECORDED), ("switched", DIED_IN_WINDOW)]
)
def test_after_the_patch_the_new_color_keeps_serving_when_the_old_is_not_running(
    phase: Phase, died: str, old: ColorState | None
) -> None:
    rec = recover(observed("green", blue=old, green=NEW_UP, in_flight=release(phase)))
    assert rec == Recovery(
        switch_to=None,
        scale_down=None,
        result="interrupted",
        reason=f"{died}; blue was not running, so the new color keeps serving",
    )


ABORTED = "aborted by carol: wrong image"


@pytest.mark.parametrize(
    ("active", "phase", "recovery"),
    [
        # Asked to stop while waiting for approval: the idle color goes, traffic never moved.
        (
            "blue",
            "awaiting-approval",
            Recovery(
                None,
                "green",
                "aborted",
                f"the run was stopped ({ABORTED}) during awaiting-approval; traffic never moved",
            ),
        ),
        # In the verification window: traffic goes back to the old color.
        (
            "green",
            "switched",
            Recovery(
                "blue",
                "green",
                "aborted",
                f"the run was stopped ({ABORTED}) after the switch to green, before "
                "verification finished; traffic returned to blue",
            ),
        ),
    ],
)
def test_a_run_stopped_on_request_is_put_right_as_a_dead_one_and_recorded_aborted(
    active: Color, phase: Phase, recovery: Recovery
) -> None:
    obs = observed(active, blue=OLD_UP, green=NEW_UP, in_flight=release(phase))
    rec = recover(obs, ABORTED)
    assert rec == recovery
    plain = recover(obs)
    assert plain is not None and rec is not None
    assert (plain.switch_to, plain.scale_down, plain.result) == (
        rec.switch_to,
        rec.scale_down,
        "interrupted",
    )


def test_a_switch_back_rollback_stopped_on_request_is_still_finished() -> None:
    back = release("switched", color="blue", previous_color="green", kind="rollback")
    rec = recover(observed("green", blue=OLD_UP, green=NEW_UP, in_flight=back), ABORTED)
    assert rec is not None and (rec.switch_to, rec.result) == ("blue", "succeeded")


def test_switched_with_traffic_already_back_on_the_old_color_only_scales_down() -> None:
    rec = recover(observed("blue", blue=OLD_UP, green=NEW_UP, in_flight=release("switched")))
    assert rec is not None
    assert (rec.switch_to, rec.scale_down) == (None, "green")


def test_a_first_deploy_that_switched_keeps_serving() -> None:
    first = release("switched", color="blue", previous_color=None)
    rec = recover(observed("blue", blue=running("blue", "shop:v2"), in_flight=first))
    assert rec is not None
    assert (rec.switch_to, rec.scale_down) == (None, None)
    assert "no older color was not running, so the new color keeps serving" in rec.reason


def test_a_first_deploy_that_died_after_the_patch_is_not_scaled_to_zero() -> None:
    # First deploy: the active Service was created for blue, then the run died in
    # switch/wait_endpoints, before "switched" was recorded.
    first = release("checking", color="blue", previous_color=None)
    rec = recover(observed("blue", blue=running("blue", "shop:v2"), in_flight=first))
    assert rec is not None
    assert rec.scale_down is None


def test_an_interrupted_switch_back_rollback_does_not_return_to_the_bad_color() -> None:
    # rollback.switch_back: blue (last good) is made active again, green (bad) is still at full
    # size until scale-down-bad; the run died in between.
    back = replace(
        release("switched", color="blue", previous_color="green", image="shop:v1", kind="rollback"),
        previous_image="shop:v2",
    )
    bad = running("green", "shop:v2")
    rec = recover(observed("blue", blue=OLD_UP, green=bad, in_flight=back))
    assert rec == Recovery(
        None,  # blue serves already
        "green",
        "succeeded",
        "the rollback to blue was switched before the run died; finished it",
    )
    # Died before its PATCH took effect (traffic still on the bad color): switch, then scale.
    rec = recover(observed("green", blue=OLD_UP, green=bad, in_flight=back))
    assert rec is not None and (rec.switch_to, rec.scale_down) == ("blue", "green")


# --- keep_old_color -----------------------------------------------------------------------------

SEEN = replace(running("blue", "shop:v1"), claimed_by="r-an-old-rollback")


@pytest.mark.parametrize(
    ("now", "active", "kept"),
    [
        (SEEN, "green", None),
        (replace(SEEN, version="9"), "green", None),  # a status update changes nothing
        (replace(SEEN, replicas=0), "green", "is already at zero"),
        (SEEN, "blue", "kept: it is active again"),
        (replace(SEEN, claimed_by="r-new"), "green", "kept: rollback r-new claimed it"),
        (replace(SEEN, release="r-next"), "green", "kept: it was reused by release r-next"),
    ],
    ids=["unchanged", "status-only", "at-zero", "active-again", "claimed", "reused"],
)
def test_the_old_color_is_retired_only_as_the_finished_run_left_it(
    now: ColorState, active: Color, kept: str | None
) -> None:
    assert keep_old_color(SEEN, now, active) == kept


# --- rollback_plan ------------------------------------------------------------------------------

TARGET = Release(
    id="r1",
    image="shop:v1",
    color="blue",
    previous_image=None,
    previous_color=None,
    started="2025-03-01T11:00:00Z",
    phase="done",
    result="succeeded",
)


@pytest.mark.parametrize(
    ("active", "blue", "plan"),
    [
        ("green", OLD_UP, "switch-back"),
        (None, OLD_UP, "switch-back"),
        ("green", OLD_DOWN, "redeploy"),
        ("green", running("blue", "shop:v1", replicas=3, ready=2), "redeploy"),
        ("green", running("blue", "shop:v3"), "redeploy"),  # reused by a later release
        ("green", None, "redeploy"),
        ("blue", OLD_UP, "redeploy"),  # the target's color is the active one
    ],
    ids=[
        "old-at-full-size",
        "no-active-service",
        "scaled-down",
        "partly-ready",
        "other-image",
        "no-deployment",
        "target-color-active",
    ],
)
def test_rollback_switches_back_only_while_the_target_runs_at_full_size(
    active: str | None, blue: ColorState | None, plan: str
) -> None:
    assert rollback_plan(observed(active, blue=blue, green=NEW_UP), TARGET) == plan


# --- drift --------------------------------------------------------------------------------------

SERVING = replace(TARGET, id="r-shop:v1")  # the release running() gives a color on shop:v1


def test_no_drift_when_the_recorded_release_serves_as_configured() -> None:
    assert drift(observed("blue", blue=OLD_UP, green=NEW_UP), SERVING, replicas=3) == []


@pytest.mark.parametrize(
    ("active", "blue", "found"),
    [
        ("green", OLD_UP, ["the active Service selects green, recorded blue"]),
        (
            "blue",
            replace(OLD_UP, image="shop:hotfix"),  # kubectl set image on the active color
            ["blue runs shop:hotfix, recorded shop:v1"],
        ),
        (
            "blue",
            replace(OLD_UP, release="r-other"),
            ["blue carries release r-other, recorded r-shop:v1"],
        ),
        ("blue", running("blue", "shop:v1", replicas=1), ["blue is scaled to 1, configured 3"]),
        (
            "blue",
            running("blue", "shop:v1", replicas=0),
            ["blue is scaled to 0, configured 3", "blue has 0/0 ready"],
        ),
        ("blue", running("blue", "shop:v1", ready=1), ["blue has 1/3 ready"]),
    ],
    ids=[
        "traffic-moved",
        "image-changed",
        "release-changed",
        "scaled",
        "scaled-to-zero",
        "unready",
    ],
)
def test_drift_names_each_difference(active: str, blue: ColorState, found: list[str]) -> None:
    assert drift(observed(active, blue=blue, green=NEW_UP), SERVING, replicas=3) == found


def test_under_an_hpa_a_different_count_is_no_drift() -> None:
    """The HPA decides the count (replicas None): only an unready color is drift."""
    scaled = running("blue", "shop:v1", replicas=5)
    assert drift(observed("blue", blue=scaled, green=NEW_UP), SERVING, replicas=None) == []
    assert drift(observed("blue", blue=scaled, green=NEW_UP), SERVING, replicas=3) == [
        "blue is scaled to 5, configured 3"
    ]


def test_drift_without_a_serving_release() -> None:
    assert drift(observed("blue", blue=OLD_UP), None, replicas=3) == [
        "no release is recorded as serving"
    ]


# --- already_serving ----------------------------------------------------------------------------


def test_the_verified_image_at_full_size_already_serves() -> None:
    assert already_serving(observed("blue", blue=OLD_UP), "shop:v1", SERVING, True)


@pytest.mark.parametrize(
    ("obs", "image", "recorded", "unchanged"),
    [
        (observed("blue", blue=OLD_UP), "shop:v2", SERVING, True),
        (observed(None, blue=OLD_UP), "shop:v1", SERVING, True),
        (observed("blue", blue=running("blue", "shop:v1", ready=2)), "shop:v1", SERVING, True),
        (observed("blue", blue=replace(OLD_UP, settled=False)), "shop:v1", SERVING, True),
        (observed("blue", blue=OLD_DOWN), "shop:v1", SERVING, True),
        (observed("blue", blue=OLD_UP, in_flight=release("checking")), "shop:v1", SERVING, True),
        (observed("blue", blue=OLD_UP), "shop:v1", None, True),
        (observed("blue", blue=OLD_UP), "shop:v1", replace(SERVING, id="r-older"), True),
        (observed("blue", blue=OLD_UP), "shop:v1", SERVING, False),
    ],
    ids=[
        "other-image",
        "nothing-active",
        "partly-ready",
        "rolling-out",
        "scaled-to-zero",
        "release-in-flight",
        "never-verified",  # e.g. a run died after the switch and the new color kept serving
        "other-release-verified",
        "configuration-changed",
    ],
)
def test_anything_less_is_deployed_again(
    obs: Observed, image: str, recorded: Release | None, unchanged: bool
) -> None:
    assert not already_serving(obs, image, recorded, unchanged)


def _reconciled(kind: str, color: Color) -> Release:
    return Release("r2", "app:v2", color, "app:v1", "blue", "2026-01-01T00:00:00Z", kind=kind)


@pytest.mark.parametrize(
    ("kind", "left_in_flight", "active", "undone"),
    [
        ("deploy", "green", "blue", True),  # traffic returned to the old color
        ("deploy", "green", "green", False),  # the old color was gone: the new one serves
        ("rollback", "blue", "blue", True),  # a switch-back the reconcile finished
    ],
    ids=["returned", "kept", "finished-rollback"],
)
def test_a_rollback_stops_where_its_reconcile_already_rolled_back(
    kind: str, left_in_flight: Color, active: Color, undone: bool
) -> None:
    obs = Observed(active, {})
    assert undone_by_reconcile(obs, _reconciled(kind, left_in_flight)) is undone
    assert not undone_by_reconcile(obs, None)


# --- contract migrations ------------------------------------------------------------------------


def test_contract_migrations_wait_for_the_old_color_to_be_gone() -> None:
    rel = release("verifying")
    mine = replace(NEW_UP, release=rel.id)
    gone = running("blue", "shop:v1", replicas=0)
    assert contract_blocker(observed("green", blue=gone, green=mine), rel, "blue", 0) is None
    assert contract_blocker(observed("green", green=mine), rel, None, 0) is None  # first deploy
    assert (
        contract_blocker(observed("green", blue=OLD_UP, green=mine), rel, "blue", 0)
        == "the old color blue still runs (0 pods)"
    )
    # Scaled to zero, but a pod still drains: it still reads the schema.
    assert (
        contract_blocker(observed("green", blue=gone, green=mine), rel, "blue", 2)
        == "the old color blue still runs (2 pods)"
    )


def test_contract_migrations_are_only_for_the_release_that_still_serves() -> None:
    rel = release("verifying")
    mine = replace(NEW_UP, release=rel.id)
    gone = running("blue", "shop:v1", replicas=0)
    why = f"green is no longer the active color of release {rel.id}"
    # Traffic went back to blue, or green runs another release by now.
    assert contract_blocker(observed("blue", blue=gone, green=mine), rel, "blue", 0) == why
    assert contract_blocker(observed("green", blue=gone, green=NEW_UP), rel, "blue", 0) == why
