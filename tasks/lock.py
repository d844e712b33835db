"""One deploy per app and environment at a time, held for the whole run including an
approval pause: a Lease in the cluster and a Prefect global concurrency limit of 1.

Two locks, taken in this order and both held until the end:

1. The Kubernetes Lease (``LEASE_SECONDS``, renewed ``RENEWALS_PER_LEASE`` times per
   lease). Taking it is a compare-and-swap: a create, or a replace carrying the
   resourceVersion we decided on, so of two deploys racing for it the API server lets
   exactly one through and answers the other 409.
2. A slot of the Prefect limit, leased for ``SLOT_LEASE_SECONDS``. Prefect 3.9 refuses a
   slot lease under 60 s (``lease_duration`` is validated ``ge=60`` by the server's
   increment-with-lease and renew endpoints) and its repossessor frees expired ones every
   15 s (``server.services.repossessor.loop_seconds``), so by itself a dead holder's slot
   blocks for 15 to 75 s. The holder therefore records its slot lease id on the Lease
   (``lease.ANNOTATION_SLOT``), and whoever takes the Lease over from an expired holder
   frees exactly that slot lease through Prefect's client before taking its own slot. A
   holder killed between taking its slot and recording it (one API request) leaves a
   slot nobody knows; its successor, owning the Lease, knows that slot is dead and makes
   the limit anew (``take_slot``) rather than wait for Prefect's expiry.

Why two live deploys never both hold the lock. Holding means having won the Lease's
compare-and-swap and not having been stopped since. A successor wins it only from a
version of the Lease it has itself watched unchanged for half a lease and whose renewTime
is a whole lease old (``lease.decide``). A live holder rewrites the Lease every
``LEASE_SECONDS / RENEWALS_PER_LEASE`` (2 s), so the Lease of a holder that can reach the
API never looks expired; during an API outage nobody can take it, and afterwards the
holder renews within one period while a successor must first watch for half a lease.
The holder's renewals and its deploy's writes go through the same client to the same API
server, so a holder that cannot renew cannot change the app either. If the holder ever
finds its Lease taken over, or Prefect says its slot lease is gone, it is stopped:
``LockLost`` (a BaseException, so no cleanup step writes anything) is raised in the thread
that holds the lock, and the run ends the way a killed run does, which the next deploy
reconciles. Freeing the dead holder's slot happens only after the successor owns the
Lease. What remains is what any lease has (client-go's leader election too): a holder
frozen (SIGSTOP, a suspended VM) or cut off from the API alone for longer than a lease
may, once back, make one write before its renewer (within a period) stops it; the traffic
switch itself is a compare-and-swap on the Service's selector and cannot land twice.

A holder killed at time 0 renewed last at -2..0 s; a successor takes the Lease at about
10 s (or half a lease after it first looked, if it started later) and its slot a moment
later, whatever ``rollout.lock_timeout_seconds`` says: that setting bounds the wait for a
live holder only, and a holder is judged alive once it is seen writing the Lease
(``lease.give_up``). tests/integration/test_lock.py measures it with the defaults.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists

from bascule import kube as k
from bascule import lease
from bascule.errors import LockLost, Refused
from bascule.kube import KubeError
from bascule.manifests import object_labels
from bascule.prefect_client import Prefect, status_of, tls_context
from bascule.tasks.context import Env
from bascule.tasks.threads import in_thread

LEASE_SECONDS = 10
RENEWALS_PER_LEASE = 5
SLOT_LEASE_SECONDS = 60  # the shortest Prefect accepts
POLL_SECONDS = 1.0  # how often a waiting deploy looks again, if the Lease does not change


class LockHeld(Refused):
    """Another deploy of the same app and environment is running."""


def _now() -> datetime:
    return datetime.now(UTC)


def _lease_body(env: Env, spec: dict[str, Any], version: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": env.lease.rsplit("/", 1)[1],
        "namespace": env.ns,
        "labels": object_labels(env.app, env.name),
    }
    if version is not None:  # makes a concurrent taker lose with 409
        metadata["resourceVersion"] = version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


@dataclass
class _Sighting:
    """When this taker first saw the Lease's current version (``lease.decide``), and whether
    it has seen the Lease change since it first looked: proof that its holder is alive."""

    version: str | None = None
    at: datetime = field(default_factory=_now)
    looked: bool = False
    changed: bool = False

    def of(self, current: dict[str, Any] | None) -> datetime:
        if lease.version(current) != self.version:
            self.changed |= self.looked
            self.version, self.at = lease.version(current), _now()
        self.looked = True
        return self.at


# A lock being broken is taken over what its holder wrote meanwhile (its renewal), this many
# times at most: a holder renews a few times per lease, never as fast as we try again.
BREAK_TRIES = 3


def _try_take(
    env: Env, me: str, seen: _Sighting, lease_seconds: int = LEASE_SECONDS, force: bool = False
) -> tuple[lease.LeaseDecision, dict[str, Any] | None]:
    """The decision, and the Lease as written when it was taken."""
    for _ in range(BREAK_TRIES if force else 1):
        current = env.kube.get_or_none(env.lease)
        decision = lease.decide(current, me, _now(), seen.of(current), force)
        if decision.action == "held":
            return decision, None
        spec = lease.held_spec(me, _now(), lease_seconds)
        body = _lease_body(env, spec, lease.version(current))
        try:
            if current is None:
                return decision, env.kube.create(k.leases(env.ns), body)
            return decision, env.kube.replace(env.lease, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        # Someone else wrote it first: judge what they wrote, seen just now. Breaking the
        # lock, a renewal by the holder being broken does not stop us: take it over that.
        fresh = env.kube.get_or_none(env.lease)
        raced = lease.decide(fresh, me, _now(), seen.of(fresh))
        if not (force and raced.action == "held" and raced.holder == decision.holder):
            break
    held = raced if raced.action == "held" else lease.LeaseDecision("held", raced.holder)
    return held, None


def _raise_in(thread: threading.Thread) -> None:
    """LockLost in ``thread`` at its next Python instruction (a blocking call finishes
    first); the same mechanism Prefect uses to stop a run whose slot lease is lost."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(LockLost)
        )


@dataclass
class _Holding:
    env: Env
    me: str
    lease_seconds: int
    acquired: datetime = field(default_factory=_now)
    slot: UUID | None = None
    last: dict[str, Any] | None = None  # the Lease as we last wrote it
    lost: str | None = None  # why the lock was lost, once it was
    _write: threading.Lock = field(default_factory=threading.Lock)

    def _rewrite(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Applies ``change`` to the Lease while it is ours, noting a takeover in ``lost``:
        one PUT on the version we wrote last; a conflict re-reads it and tries once more."""
        with self._write:
            for attempt in (1, 2):
                current = self.last or self.env.kube.get_or_none(self.env.lease)
                holder = current["spec"].get("holderIdentity") if current else None
                if current is None or holder != self.me:
                    self.lost = f"the Lease was taken over by {holder or 'nobody'}"
                    return
                change(current)
                try:
                    self.last = self.env.kube.replace(self.env.lease, current)
                    return
                except KubeError as exc:
                    self.last = None  # someone else may have written: read it again
                    if exc.status != 409 or attempt == 2:
                        raise

    def renew(self) -> None:
        """Rewrites the Lease as ours, with the slot lease id once there is one."""

        def renewed(current: dict[str, Any]) -> None:
            if self.slot is not None:
                annotations = current["metadata"].setdefault("annotations", {})
                annotations[lease.ANNOTATION_SLOT] = str(self.slot)
            current["spec"] = lease.held_spec(self.me, _now(), self.lease_seconds, self.acquired)

        self._rewrite(renewed)

    def keep(self, stop: threading.Event, holder: threading.Thread) -> None:
        """The background renewal, until ``stop``; raises LockLost in ``holder`` when the
        lock turns out lost."""
        every = self.lease_seconds / RENEWALS_PER_LEASE
        slot_due = time.monotonic()
        while not stop.wait(every):
            # Whatever fails is retried next period: a renewer that died would let the
            # Lease expire under a live holder.
            try:
                self.renew()
                if self.slot is not None and time.monotonic() >= slot_due:
                    self._renew_slot(self.slot)
                    slot_due = time.monotonic() + SLOT_LEASE_SECONDS / 4
            except Exception:
                continue
            if self.lost is not None and not stop.is_set():
                # LockLost carries no text into the holder's thread: say here why.
                logging.getLogger(__name__).error("deploy lock lost: %s", self.lost)
                _raise_in(holder)
                return

    def _renew_slot(self, slot: UUID) -> None:
        try:
            with get_client(sync_client=True) as prefect:
                prefect.renew_concurrency_lease(slot, lease_duration=SLOT_LEASE_SECONDS)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 410:
                raise
            self.lost = "Prefect revoked the concurrency slot lease"

    def release(self) -> None:
        def released(current: dict[str, Any]) -> None:
            current["spec"] = {"leaseDurationSeconds": self.lease_seconds}
            current["metadata"].get("annotations", {}).pop(lease.ANNOTATION_SLOT, None)

        with suppress(KubeError):  # if this fails, it expires by itself
            self._rewrite(released)


def limit_name(env: Env) -> str:
    # The namespace too: two clusters or namespaces may each hold an environment of that name.
    return f"bascule-deploy-{env.app}-{env.name}-{env.ns}"


def create_limit(api: SyncPrefectClient, name: str) -> None:
    """Creates the global concurrency limit if missing; a limit that cannot be found when
    taking a slot then fails the run instead of silently not locking."""
    with suppress(ObjectAlreadyExists):
        api.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def ensure_limit(name: str) -> None:
    """``create_limit`` through a client of its own."""
    with get_client(sync_client=True) as client:
        create_limit(client, name)


def free_slot(slot: str) -> None:
    """Frees a dead holder's slot lease (a lease already gone is a no-op for Prefect)."""
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(UUID(slot))


def take_slot(name: str, deadline: float, orphaned: bool = False) -> UUID:
    """A slot of the limit ``name``, waiting until ``deadline`` (monotonic); returns its
    lease id. LockHeld when the slot stays taken. Creates the limit when Prefect has none of
    that name: one request per deploy fewer than creating it every time.

    ``orphaned``: a slot found taken can only be a dead holder's that it never recorded
    (``deploy_lock``). Prefect has no call that frees another client's lease by limit, so
    the limit is deleted and made anew: the dead lease then refers to a limit that no longer
    exists, and its expiry changes nothing.

    A busy server's answers are retried at once (``Prefect.in_run``'s ``send``): py-spy found a
    deploy or rollback waiting here 1-2 s in `make bench` with Prefect's own backoff."""
    created = False
    with Prefect.in_run() as prefect:
        while True:
            try:
                resp = prefect.send(
                    lambda api: api.increment_concurrency_slots_with_lease(
                        names=[name],
                        slots=1,
                        mode="concurrency",
                        lease_duration=SLOT_LEASE_SECONDS,
                    )
                )
            except (httpx.HTTPStatusError, httpx.TransportError) as exc:
                if status_of(exc) != 423:  # 423 Locked: the slot is taken
                    raise
                if orphaned:
                    logging.getLogger(__name__).warning(
                        "freeing the Prefect concurrency slot of a dead deploy "
                        "(it died before recording it): deleting and recreating %s",
                        name,
                    )
                    prefect.send(lambda api: api.delete_global_concurrency_limit_by_name(name))
                    orphaned = False
                    continue
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"the Prefect global concurrency limit {name} is taken by another "
                        "run; wait for it to finish or set rollout.lock_timeout_seconds "
                        "to queue behind it"
                    ) from None
                time.sleep(POLL_SECONDS)
                continue
            body = resp.json()
            if body["limits"]:
                return UUID(body["lease_id"])
            if created:  # never silently unlocked
                raise RuntimeError(f"the Prefect global concurrency limit {name} does not exist")
            # An environment's first deploy: the lease Prefect gave holds nothing.
            prefect.client.release_concurrency_slots_with_lease(UUID(body["lease_id"]))
            # Through the slot's own client: both talk to the same server.
            prefect.send(lambda api: create_limit(api, name))
            created = True


@contextmanager
def deploy_lock(
    env: Env, me: str, lease_seconds: int = LEASE_SECONDS, breaking: str | None = None
) -> Iterator[None]:
    """Holds the app and environment's lock around the body; LockHeld when another deploy
    keeps it past ``rollout.lock_timeout_seconds``; LockLost in the body if it is lost.

    ``breaking``: who breaks the lock of a live holder, and why ("by alice, because: ...",
    from ``bascule rollback --break-lock``). The holder's renewer finds its Lease taken and
    stops it within a renewal period, as if it had been killed; the body starts once that
    period is over, and ``env.lock_broken`` says whose lock was broken, for the history."""
    started = time.monotonic()
    deadline = started + env.cfg.rollout.lock_timeout_seconds
    in_thread(tls_context)  # the slot's client's, while the Lease is taken
    seen = _Sighting()
    while True:
        decision, written = _try_take(env, me, seen, lease_seconds, breaking is not None)
        if decision.action == "take":
            break
        now = time.monotonic()
        if lease.give_up(now >= deadline, seen.changed, now - started, lease_seconds):
            where = f"Lease {env.ns}/{env.lease.rsplit('/', 1)[1]}"
            raise LockHeld(lease.refusal(env.app, env.name, where, decision))
        # Looks again at the Lease's next change (its release: at once), after a poll, or
        # the moment it expires if that comes first.
        until = (decision.expires - _now()).total_seconds() if decision.expires else POLL_SECONDS
        env.kube.wait_for_change(
            k.leases(env.ns),
            seen.version or "0",
            min(POLL_SECONDS, max(until, 0.0) + 0.01),
            fieldSelector=f"metadata.name={env.lease.rsplit('/', 1)[1]}",
        )
    holding = _Holding(env, me, lease_seconds, last=written)
    stop = threading.Event()
    keep = contextvars.copy_context().run  # the run's Prefect settings, in the renewer too
    renewer = threading.Thread(
        target=keep, args=(holding.keep, stop, threading.current_thread()), daemon=True
    )
    renewer.start()  # before waiting for the slot: the Lease must not expire meanwhile
    try:
        if decision.broken:
            env.lock_broken = f"broke the lock of {decision.holder} {breaking}"
            logging.getLogger(__name__).warning("%s", env.lock_broken)
            time.sleep(lease_seconds / RENEWALS_PER_LEASE + 1)  # until its renewer stops it
        if decision.stale_slot is not None:
            free_slot(decision.stale_slot)  # its holder is dead: the Lease is ours now
        # Taken over from a holder that recorded no slot: it died before it had one, or
        # between taking it and recording it; only the latter leaves the slot taken.
        orphaned = decision.holder is not None and decision.stale_slot is None
        orphaned |= decision.broken  # its slot is recorded, but it may not have been yet
        holding.slot = take_slot(limit_name(env), deadline, orphaned)
        with suppress(KubeError):  # else the renewer records it within a period
            holding.renew()
        if holding.lost is not None:
            raise LockLost(holding.lost)
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        if holding.slot is not None:
            with suppress(httpx.HTTPError):  # if this fails, Prefect expires it
                free_slot(str(holding.slot))
        holding.release()
