"""Who may deploy now: decisions on coordination.k8s.io/v1 Lease objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bascule.lease import LeaseDecision, decide, format_time, held_spec, parse_time

ME = "flow-run/7b1e5b0c-0000-4000-8000-000000000001"
OTHER = "flow-run/7b1e5b0c-0000-4000-8000-000000000002"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


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
    assert decide(current, ME, NOW) == LeaseDecision("take")


def test_a_live_lease_of_another_holder_is_held() -> None:
    decision = decide(held_by(OTHER, "2025-03-01T11:59:30.000000Z"), ME, NOW)
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
    decision = decide(held_by(OTHER, renewed), ME, NOW)
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
    assert decide(current, ME, NOW).action == "held"
    assert decide(current, ME, NOW + timedelta(seconds=15)).action == "take"


def test_second_precision_times_are_understood() -> None:
    assert decide(held_by(OTHER, "2025-03-01T11:59:30Z"), ME, NOW).action == "held"


def test_held_spec_is_a_lease_spec_that_others_see_as_held() -> None:
    acquired = NOW - timedelta(minutes=5)
    spec = held_spec(ME, NOW, 60, acquired)
    assert spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 60,
        "acquireTime": "2025-03-01T11:55:00.000000Z",
        "renewTime": "2025-03-01T12:00:00.000000Z",
    }
    assert decide(lease(spec), OTHER, NOW + timedelta(seconds=59)).action == "held"
    assert decide(lease(spec), OTHER, NOW + timedelta(seconds=60)).action == "take"
    assert decide(lease(spec), ME, NOW + timedelta(seconds=1)).action == "take"


def test_held_spec_acquires_now_by_default() -> None:
    spec = held_spec(ME, NOW, 60)
    assert spec["acquireTime"] == spec["renewTime"] == format_time(NOW)


def test_times_round_trip_in_utc() -> None:
    local = datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(local) == "2025-03-01T12:00:00.123456Z"
    assert parse_time(format_time(local)) == local
    assert parse_time("not a time") is None
    assert parse_time(None) is None
