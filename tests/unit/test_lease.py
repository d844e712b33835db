"""Who may deploy now: decisions on coordination.k8s.io/v1 Lease objects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bascule.lease import (
    ANNOTATION_SLOT,
    LeaseDecision,
    decide,
    format_time,
    give_up,
    held_spec,
    parse_time,
    refusal,
    version,
)

ME = "flow-run/7b1e5b0c-0000-4000-8000-000000000001"
OTHER = "flow-run/7b1e5b0c-0000-4000-8000-000000000002"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=1)  # first seen long ago: only the Lease's times count


def lease(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "bascule-shop", "namespace": "shop", "resourceVersion": "4711"},
        "spec": spec,
    }


def held_by(holder: str, renewed: str, duration: int = 60, **extra: Any) -> dict[str, Any]:
    return lease(
        {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": "2025-03-01T11:50:00.000000Z",
            "renewTime": renewed,
            **extra,
        }
    )


@pytest.mark.parametrize(
    "current",
    [
        None,
        held_by(ME, "2025-03-01T11:59:50.000000Z"),
        lease({"leaseDurationSeconds": 60}),  # released: the holder cleared the spec
        held_by("", "2025-03-01T11:59:50.000000Z"),
    ],
    ids=["absent", "ours", "released", "empty-holder"],
)
def test_a_free_or_own_lease_is_taken(current: dict[str, Any] | None) -> None:
    assert decide(current, ME, NOW, LONG_AGO) == LeaseDecision("take")


def test_a_live_lease_of_another_holder_is_held() -> None:
    decision = decide(held_by(OTHER, "2025-03-01T11:59:30.000000Z"), ME, NOW, LONG_AGO)
    assert decision == LeaseDecision("held", OTHER, datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("renewed", "action"),
    [
        ("2025-03-01T11:58:00.000000Z", "take"),  # expired a minute ago
        ("2025-03-01T11:59:00.000000Z", "take"),  # expires exactly now
        ("2025-03-01T11:59:00.000001Z", "held"),  # a microsecond left
    ],
)
def test_a_lease_expires_duration_seconds_after_its_renewal(renewed: str, action: str) -> None:
    decision = decide(held_by(OTHER, renewed), ME, NOW, LONG_AGO)
    assert (decision.action, decision.holder) == (action, OTHER)
    assert decision.expires == parse_time(renewed) + timedelta(seconds=60)  # type: ignore[operator]


def test_without_a_renewal_the_acquire_time_counts() -> None:
    current = lease(
        {
            "holderIdentity": OTHER,
            "leaseDurationSeconds": 60,
            "acquireTime": "2025-03-01T11:59:15.000000Z",
        }
    )
    assert decide(current, ME, NOW, LONG_AGO).action == "held"
    assert decide(current, ME, NOW + timedelta(seconds=15), LONG_AGO).action == "take"


def test_second_precision_times_are_understood() -> None:
    assert decide(held_by(OTHER, "2025-03-01T11:59:30Z"), ME, NOW, LONG_AGO).action == "held"


def test_held_spec_is_a_lease_spec_that_others_see_as_held() -> None:
    acquired = NOW - timedelta(minutes=5)
    spec = held_spec(ME, NOW, 60, acquired)
    assert spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 60,
        "acquireTime": "2025-03-01T11:55:00.000000Z",
        "renewTime": "2025-03-01T12:00:00.000000Z",
    }
    assert decide(lease(spec), OTHER, NOW + timedelta(seconds=59), LONG_AGO).action == "held"
    assert decide(lease(spec), OTHER, NOW + timedelta(seconds=60), LONG_AGO).action == "take"
    assert decide(lease(spec), ME, NOW + timedelta(seconds=1), LONG_AGO).action == "take"


def test_held_spec_acquires_now_by_default() -> None:
    spec = held_spec(ME, NOW, 60)
    assert spec["acquireTime"] == spec["renewTime"] == format_time(NOW)


def test_times_round_trip_in_utc() -> None:
    local = datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(local) == "2025-03-01T12:00:00.123456Z"
    assert parse_time(format_time(local)) == local
    assert parse_time("not a time") is None
    assert parse_time(None) is None


@pytest.fixture
def tokyo_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is not UTC."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo_clock")
def test_times_are_written_in_utc_whatever_the_machines_zone() -> None:
    assert format_time(NOW) == "2025-03-01T12:00:00.000000Z"
    assert format_time(datetime(2025, 3, 1, 21, 0)) == "2025-03-01T12:00:00.000000Z"  # naive: local


def test_the_version_first_seen_refers_to_is_the_resource_version() -> None:
    assert version(held_by(OTHER, "2025-03-01T11:59:50Z")) == "4711"
    assert version(None) is None
    assert version({"spec": {}}) is None


def test_a_holder_without_times_keeps_the_lease_a_whole_duration_from_first_sight() -> None:
    # A Lease just created by a racing taker (or by another tool) with no renewTime yet: the
    # old decision took it over at once, and its refusal had no time to name.
    current = lease({"holderIdentity": OTHER, "leaseDurationSeconds": 10})
    decision = decide(current, ME, NOW, NOW)
    assert decision == LeaseDecision("held", OTHER, NOW + timedelta(seconds=10))
    assert decide(current, ME, NOW + timedelta(seconds=9), NOW).action == "held"
    assert decide(current, ME, NOW + timedelta(seconds=10), NOW).action == "take"
    message = refusal("shop", "staging", "Lease shop/shop-bascule-deploy", decision)
    assert "held until at least 12:00:10 UTC" in message, message


def test_a_stale_looking_lease_is_watched_half_a_duration_before_it_is_taken() -> None:
    # renewTime a minute old (an API outage just ended, or the holder's clock is behind):
    # a live holder renews within a period, so only half a lease unchanged proves it dead.
    current = held_by(OTHER, "2025-03-01T11:59:00.000000Z", duration=10)
    assert decide(current, ME, NOW, NOW) == LeaseDecision("held", OTHER, NOW + timedelta(seconds=5))
    assert decide(current, ME, NOW + timedelta(seconds=4.9), NOW).action == "held"
    assert decide(current, ME, NOW + timedelta(seconds=5), NOW).action == "take"


def test_the_expired_holders_slot_lease_is_handed_to_the_successor() -> None:
    current = held_by(OTHER, "2025-03-01T11:59:30.000000Z", duration=10)
    current["metadata"]["annotations"] = {ANNOTATION_SLOT: "3f1c-slot"}
    assert decide(current, ME, NOW, LONG_AGO).stale_slot == "3f1c-slot"
    live = decide(current, ME, NOW - timedelta(seconds=25), LONG_AGO)
    assert live.action == "held" and live.stale_slot is None


def test_a_refusal_without_a_known_expiry_names_no_time() -> None:
    message = refusal("shop", "staging", "Lease shop/x", LeaseDecision("held", OTHER))
    assert f"is being deployed by {OTHER} (Lease shop/x, held);" in message
    assert "until" not in message
    unknown = refusal("shop", "staging", "Lease shop/x", LeaseDecision("held"))
    assert unknown == (
        "shop in staging is being deployed by another run (Lease shop/x, held); wait for it to "
        "finish or set rollout.lock_timeout_seconds to queue behind it"
    )


@pytest.mark.parametrize(
    ("past_deadline", "wrote", "watched", "refuse"),
    [
        (False, True, 100.0, False),  # still within the configured wait
        (True, True, 0.5, True),  # seen renewing: alive, refused at once
        (True, False, 9.9, False),  # not yet seen writing: maybe dead, keep watching
        (True, False, 20.0, True),  # two durations without an expiry: a clock far ahead
    ],
    ids=["waiting", "alive", "maybe-dead", "bounded"],
)
def test_a_taker_refuses_only_a_holder_seen_alive(
    past_deadline: bool, wrote: bool, watched: float, refuse: bool
) -> None:
    assert give_up(past_deadline, wrote, watched, duration_s=10) is refuse


def test_forcing_breaks_only_a_live_lease() -> None:
    current = held_by(OTHER, "2025-03-01T11:59:50.000000Z", duration=10)  # expires at NOW
    live = decide(current, ME, NOW - timedelta(seconds=1), LONG_AGO, force=True)
    assert (live.action, live.broken) == ("take", True)
    expired = decide(current, ME, NOW, LONG_AGO, force=True)  # at its expiry exactly
    assert (expired.action, expired.broken) == ("take", False)
    assert decide(current, ME, NOW, LONG_AGO) == LeaseDecision("take", OTHER, NOW)


def test_leases_as_sparse_as_the_api_sends_them() -> None:
    assert decide({"metadata": {"name": "x"}}, ME, NOW, NOW) == LeaseDecision("take")  # no spec
    # No duration: expired as soon as renewed; no metadata: no slot to hand over.
    bare = {"spec": {"holderIdentity": OTHER, "renewTime": format_time(NOW)}}
    assert decide(bare, ME, NOW, NOW) == LeaseDecision("take", OTHER, NOW)
