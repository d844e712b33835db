"""When Argo Rollouts is done, read from what the watches of its Rollout and ReplicaSets
printed."""

from __future__ import annotations

from bench.argo.watch import (
    RolloutSeen,
    SetSeen,
    done_at,
    parse_rollout,
    parse_set,
    switched_back_at,
)

V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"


def rollout(t: float, image: str, gen: str, observed: str, phase: str, h: str) -> RolloutSeen:
    stable = active = h if phase == "Healthy" else "aaa"
    return RolloutSeen(t, gen, observed, image, phase, stable, h, active)


# v1 (hash aaa) serves; v2 (bbb) is set at 10.0, promoted at 13.0, the old set gone at 14.5.
SEEN: list[RolloutSeen | SetSeen] = [
    rollout(1.0, V1, "1", "1", "Healthy", "aaa"),
    SetSeen(1.0, "app-aaa", "aaa", 1),
    rollout(10.1, V2, "2", "1", "Healthy", "aaa"),  # asked, not yet acted on
    rollout(10.2, V2, "2", "2", "Progressing", "bbb"),
    SetSeen(10.3, "app-bbb", "bbb", 1),
    rollout(13.0, V2, "2", "2", "Healthy", "bbb"),
    SetSeen(14.5, "app-aaa", "aaa", 0),
]


def test_done_once_promoted_and_healthy_or_once_the_old_set_is_gone_too() -> None:
    assert done_at(SEEN, 10.0, V2, alone=False) == 13.0
    assert done_at(SEEN, 10.0, V2, alone=True) == 14.5
    assert done_at(reversed(SEEN), 10.0, V2, alone=True) == 14.5  # by time, not arrival


def test_not_done_before_the_change_is_seen_or_on_another_image() -> None:
    assert done_at(SEEN[:5], 10.0, V2, alone=False) is None
    assert done_at(SEEN, 10.0, V1, alone=False) is None
    # A Healthy status from before the ask does not count for an ask after it.
    assert done_at(SEEN[:2], 5.0, V1, alone=False) is None


def test_a_stale_status_of_an_older_generation_is_not_done() -> None:
    stale = [rollout(11.0, V2, "3", "2", "Healthy", "bbb")]
    assert done_at(stale, 10.0, V2, alone=False) is None


def test_watch_lines_parse_and_odd_lines_are_skipped() -> None:
    assert parse_rollout(2.0, "4|4|img:v2|Healthy|bbb|bbb|bbb|") == RolloutSeen(
        2.0, "4", "4", "img:v2", "Healthy", "bbb", "bbb", "bbb", ""
    )
    assert parse_rollout(2.0, "5|5|img:v3|Degraded|bbb|ccc|bbb|true").aborted == "true"
    assert parse_set(2.0, "app-aaa|aaa|") == SetSeen(2.0, "app-aaa", "aaa", 0)
    assert parse_set(2.0, "garbage") is None and parse_rollout(2.0, "a|b") is None


def test_switched_back_once_aborted_and_the_active_service_on_the_stable_pods_again() -> None:
    """A bad v2 (hash bbb) on top of v1 (aaa), its analysis failing at 20.0."""
    promoted = RolloutSeen(15.0, "2", "2", V2, "Healthy", "aaa", "bbb", "bbb")
    aborting = RolloutSeen(20.0, "2", "2", V2, "Degraded", "aaa", "bbb", "bbb", "true")
    back = RolloutSeen(20.3, "2", "2", V2, "Degraded", "aaa", "bbb", "aaa", "true")
    seen: list[RolloutSeen | SetSeen] = [back, promoted, aborting]  # by time, not arrival
    assert switched_back_at(seen, 10.0) == 20.3
    assert switched_back_at(seen[1:], 10.0) is None  # aborted, the Service not back yet
    assert switched_back_at(seen, 21.0) is None  # an earlier round's abort does not count
