"""Who may deploy now: a pure decision on a coordination.k8s.io Lease.

One deploy per app and environment at a time. The Lease lives in the cluster, so it holds
across an approval pause and across machines; a holder that died stops renewing and its
Lease expires, so a crashed run never locks the app forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Obj = dict[str, Any]
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LeaseDecision:
    action: Literal["take", "held"]
    holder: str | None = None
    expires: datetime | None = None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in (MICROTIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(MICROTIME)


def decide(lease: Obj | None, me: str, now: datetime) -> LeaseDecision:
    """``take`` when the Lease is absent, ours, released, or expired; else ``held``."""
    if lease is None:
        return LeaseDecision("take")
    spec = lease.get("spec", {})
    holder = spec.get("holderIdentity")
    if not holder or holder == me:
        return LeaseDecision("take")
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 0)
    if renewed is None:
        return LeaseDecision("take")
    expires = renewed + timedelta(seconds=duration)
    if now >= expires:
        return LeaseDecision("take", holder, expires)
    return LeaseDecision("held", holder, expires)


def held_spec(me: str, now: datetime, duration_s: int, acquired: datetime | None = None) -> Obj:
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration_s,
        "acquireTime": format_time(acquired or now),
        "renewTime": format_time(now),
    }
