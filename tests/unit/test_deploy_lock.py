"""The deploy lock's take-over of the Lease (tasks.lock), against a Lease store that answers
409 as the API server does when someone wrote in between."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from bascule import lease
from bascule.kube import KubeError
from bascule.tasks import lock

HOLDER, ME = "flow-run/holder", "flow-run/breaker"


@dataclass
class Leases:
    """One Lease; ``renewals``: how many replaces the holder's renewer wins before ours."""

    obj: dict[str, Any]
    renewals: int = 0
    replaced: list[str] = field(default_factory=list)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the Lease exists")

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.renewals:  # the holder renewed between our read and our write
            self.renewals -= 1
            self._write(HOLDER)
            raise KubeError("PUT", path, 409, "the object has been modified")
        self._write(body["spec"]["holderIdentity"])
        return copy.deepcopy(self.obj)

    def _write(self, holder: str) -> None:
        version = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        self.obj["metadata"]["resourceVersion"] = version
        self.obj["spec"] = lease.held_spec(holder, lock._now(), 30)
        self.replaced.append(holder)


@dataclass
class Env:
    kube: Leases
    ns: str = "ns"
    app: str = "app"
    name: str = "staging"
    lease: str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/app-bascule-deploy"


def held() -> Leases:
    spec = lease.held_spec(HOLDER, lock._now(), 30)
    return Leases(
        {"metadata": {"name": "app-bascule-deploy", "resourceVersion": "1"}, "spec": spec}
    )


def test_breaking_a_live_lock_takes_it_over_the_holders_renewal() -> None:
    leases = held()
    leases.renewals = 1
    decision, written = lock._try_take(Env(leases), ME, lock._Sighting(), 30, force=True)  # type: ignore[arg-type]
    assert decision.action == "take" and decision.broken, decision
    assert written is not None and written["spec"]["holderIdentity"] == ME
    assert leases.replaced == [HOLDER, ME]


def test_a_holder_that_outwrites_every_try_keeps_its_lock() -> None:
    leases = held()
    leases.renewals = lock.BREAK_TRIES
    decision, written = lock._try_take(Env(leases), ME, lock._Sighting(), 30, force=True)  # type: ignore[arg-type]
    assert (decision.action, decision.holder, written) == ("held", HOLDER, None)
    assert leases.replaced == [HOLDER] * lock.BREAK_TRIES


def test_without_breaking_a_renewal_in_between_means_held() -> None:
    leases = held()
    leases.obj["spec"]["holderIdentity"] = ""  # released: anyone takes it
    leases.renewals = 1
    decision, written = lock._try_take(Env(leases), ME, lock._Sighting(), 30)  # type: ignore[arg-type]
    assert (decision.action, decision.holder, written) == ("held", HOLDER, None)
    assert leases.replaced == [HOLDER]
