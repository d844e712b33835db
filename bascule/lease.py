"""Who may deploy now: a pure decision on a coordination.k8s.io Lease.

One deploy per app and environment at a time. The Lease lives in the cluster, so it holds
across an approval pause and across machines; a holder that died stops renewing and its
Lease expires, so a crashed run never locks the app forever.

A Lease of another holder expires only when both have passed:

- its ``leaseDurationSeconds`` after its ``renewTime`` (or ``acquireTime``), by our clock;
- half its duration after we first saw this very version of it (``first_seen``, by our
  clock). A live holder renews several times per half duration, so a version that stays
  unchanged that long has a holder that cannot renew. This half also covers what the
  times cannot: a holder whose clock runs behind ours, a Lease without times, and a Lease
  that looks stale after an API outage although its holder renews as soon as the API
  answers again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Obj = dict[str, Any]
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"
# The holder's Prefect slot lease id, so that a successor can free exactly that slot.
ANNOTATION_SLOT = "bascule.io/prefect-slot-lease"


@dataclass(frozen=True)
class LeaseDecision:
    action: Literal["take", "held"]
    holder: str | None = None
    expires: datetime | None = None
    stale_slot: str | None = None  # the expired holder's Prefect slot lease, to free
    broken: bool = False  # taken from a holder that had not expired (``decide``'s ``force``)


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


def version(lease: Obj | None) -> str | None:
    """The resourceVersion that identifies what ``first_seen`` refers to."""
    return None if lease is None else lease.get("metadata", {}).get("resourceVersion")


def decide(
    lease: Obj | None, me: str, now: datetime, first_seen: datetime, force: bool = False
) -> LeaseDecision:
    """``take`` when the Lease is absent, ours, released, or expired; else ``held``, or with
    ``force`` (a person breaking the lock of a holder they judge stuck) ``take`` all the same.

    ``first_seen``: when the caller first read this version of the Lease."""
    if lease is None:
        return LeaseDecision("take")
    spec = lease.get("spec", {})
    holder = spec.get("holderIdentity")
    if not holder or holder == me:
        return LeaseDecision("take")
    duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    expires = max((renewed or first_seen) + duration, first_seen + duration / 2)
    if now < expires and not force:
        return LeaseDecision("held", holder, expires)
    slot = lease.get("metadata", {}).get("annotations", {}).get(ANNOTATION_SLOT)
    return LeaseDecision("take", holder, expires, slot, broken=now < expires)


def give_up(past_deadline: bool, holder_wrote: bool, watched_s: float, duration_s: int) -> bool:
    """Whether a taker that finds the Lease held refuses now. Only once its own wait
    (``rollout.lock_timeout_seconds``, 0 by default) is over, and only for a holder that
    is alive: one that wrote the Lease while the taker watched (a live holder renews several
    times per duration). A holder that did not may be dead, so the taker watches on until
    ``decide`` says its Lease expired: a whole duration at most with clocks in step; twice
    that bounds the watch whatever the holder's clock says."""
    return past_deadline and (holder_wrote or watched_s >= 2 * duration_s)


def held_spec(me: str, now: datetime, duration_s: int, acquired: datetime | None = None) -> Obj:
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration_s,
        "acquireTime": format_time(acquired or now),
        "renewTime": format_time(now),
    }


def refusal(app: str, environment: str, where: str, decision: LeaseDecision) -> str:
    """The message of a refused lock: who holds it and until when at the earliest."""
    until = f" until at least {decision.expires:%H:%M:%S} UTC" if decision.expires else ""
    return (
        f"{app} in {environment} is being deployed by {decision.holder or 'another run'} "
        f"({where}, held{until}); wait for it to finish or set rollout.lock_timeout_seconds "
        "to queue behind it"
    )
