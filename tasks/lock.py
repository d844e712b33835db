"""One deploy per app and environment at a time, held for the whole run including an
approval pause: a Lease in the cluster (renewed in the background, so it expires if the
holder dies) and a Prefect global concurrency limit taken with strict=True."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from bascule import kube as k
from bascule import lease
from bascule.errors import Refused
from bascule.kube import KubeError
from tasks.context import Env

# Prefect accepts no slot lease shorter than a minute; the Lease matches it, so a dead
# holder frees both within a minute.
LEASE_SECONDS = 60


class LockHeld(Refused):
    """Another deploy of the same app and environment is running."""


def _now() -> datetime:
    return datetime.now(UTC)


def _try_take(env: Env, me: str) -> lease.LeaseDecision:
    path = env.lease
    current = env.kube.get_or_none(path)
    decision = lease.decide(current, me, _now())
    if decision.action == "held":
        return decision
    spec = lease.held_spec(me, _now(), LEASE_SECONDS)
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": path.rsplit("/", 1)[1], "namespace": env.ns},
        "spec": spec,
    }
    try:
        if current is None:
            env.kube.create(k.leases(env.ns), body)
        else:  # resourceVersion makes a concurrent taker lose with 409
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            env.kube.replace(path, body)
    except KubeError as exc:
        if exc.status in (409,):
            fresh = env.kube.get_or_none(path) or {}
            holder = fresh.get("spec", {}).get("holderIdentity")
            return lease.LeaseDecision("held", holder)
        raise
    return decision


def _renew(env: Env, me: str, stop: threading.Event) -> None:
    acquired = _now()
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            current = env.kube.get(env.lease)
            if current["spec"].get("holderIdentity") != me:
                return  # taken over after expiry: nothing of ours to renew
            current["spec"] = lease.held_spec(me, _now(), LEASE_SECONDS, acquired)
            env.kube.replace(env.lease, current)
        except KubeError:
            continue  # transient: the next tick tries again well before expiry


def _release(env: Env, me: str) -> None:
    current = env.kube.get_or_none(env.lease)
    if current and current["spec"].get("holderIdentity") == me:
        current["spec"] = {"leaseDurationSeconds": LEASE_SECONDS}
        with suppress(KubeError):  # if this fails, it expires by itself
            env.kube.replace(env.lease, current)


def limit_name(env: Env) -> str:
    # The namespace too: two clusters or namespaces may each hold an environment of that name.
    return f"bascule-deploy-{env.app}-{env.name}-{env.ns}"


def ensure_limit(name: str) -> None:
    """Creates the global concurrency limit if missing; taking it then uses strict=True,
    so a limit deleted later fails the run instead of silently not locking."""
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextmanager
def deploy_lock(env: Env, me: str, use_prefect: bool = True) -> Iterator[None]:
    wait = env.cfg.rollout.lock_timeout_seconds
    deadline = time.monotonic() + wait
    while True:
        decision = _try_take(env, me)
        if decision.action == "take":
            break
        if time.monotonic() >= deadline:
            until = f" until {decision.expires:%H:%M:%S} UTC" if decision.expires else ""
            raise LockHeld(
                f"{env.app} in {env.name} is being deployed by {decision.holder} (Lease "
                f"{env.ns}/{env.lease.rsplit('/', 1)[1]}, held{until}); wait for it to finish "
                "or set rollout.lock_timeout_seconds to queue behind it"
            )
        time.sleep(1)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(env, me, stop), daemon=True)
    renewer.start()
    try:
        if use_prefect:
            ensure_limit(limit_name(env))
            remaining = max(1.0, deadline - time.monotonic())
            guard: AbstractContextManager[None] = concurrency(
                limit_name(env),
                occupy=1,
                strict=True,
                timeout_seconds=remaining,
                lease_duration=LEASE_SECONDS,
            )
        else:
            guard = nullcontext()
        with guard:
            yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        _release(env, me)
