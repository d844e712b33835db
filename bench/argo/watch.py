"""When Argo Rollouts is done, as watches show it: one ``kubectl get --watch`` of the Rollout
and one of its namespace's ReplicaSets (``bench.timeline.Watches``). Nothing is polled: no
``kubectl get`` process every tenth of a second on the machine the tools share (issue 24),
only two long-lived watches started before the rounds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from bench.argo.rollouts import HASH_LABEL
from bench.timeline import Watches
from tests.support.cluster import Cluster

_ROLLOUT = (
    "{.metadata.generation}|{.status.observedGeneration}|{.spec.template.spec.containers[0].image}"
    "|{.status.phase}|{.status.stableRS}|{.status.currentPodHash}"
    '|{.status.blueGreen.activeSelector}|{.status.abort}{"\\n"}'
)
_SET = f'{{.metadata.name}}|{{.metadata.labels.{HASH_LABEL}}}|{{.status.replicas}}{{"\\n"}}'


@dataclass(frozen=True)
class RolloutSeen:
    t: float
    generation: str
    observed: str  # the generation the controller has acted on
    image: str
    phase: str
    stable: str  # the stable ReplicaSet's pod-template hash
    current: str  # the current template's hash
    active: str  # the hash the active Service selects
    aborted: str = ""  # "true" once the controller aborted the update (a failed analysis)


@dataclass(frozen=True)
class SetSeen:
    t: float
    name: str
    hash: str
    replicas: int


# When something happened, read from the watches' lines; None while it has not.
Found = Callable[[list[RolloutSeen | SetSeen]], float | None]


def _settled(r: RolloutSeen, sets: Iterable[SetSeen], image: str, alone: bool) -> bool:
    promoted = r.image == image and r.generation == r.observed and r.phase == "Healthy"
    if not promoted or not r.current or r.stable != r.current or r.active != r.current:
        return False
    return not alone or all(s.hash == r.current or not s.replicas for s in sets)


def done_at(
    seen: Iterable[RolloutSeen | SetSeen], since: float, image: str, alone: bool
) -> float | None:
    """The first moment after ``since`` at which the Rollout ran ``image``, Healthy and
    promoted (its active Service on the current pods); with ``alone``, also no other
    ReplicaSet with pods left (the scale-down done). None while not yet."""
    rollout: RolloutSeen | None = None
    sets: dict[str, SetSeen] = {}
    for s in sorted(seen, key=lambda s: s.t):
        if isinstance(s, RolloutSeen):
            rollout = s
        else:
            sets[s.name] = s
        if s.t >= since and rollout is not None and _settled(rollout, sets.values(), image, alone):
            return s.t
    return None


def switched_back_at(seen: Iterable[RolloutSeen | SetSeen], since: float) -> float | None:
    """The first moment after ``since`` at which the controller had aborted the update and
    the active Service selected the stable pods again (a failed analysis undone)."""
    for s in sorted(seen, key=lambda s: s.t):
        if not isinstance(s, RolloutSeen) or s.t < since:
            continue
        if s.aborted == "true" and s.active == s.stable:
            return s.t
    return None


def parse_rollout(t: float, line: str) -> RolloutSeen | SetSeen | None:
    fields = line.split("|")
    return RolloutSeen(t, *fields) if len(fields) == 8 else None


def parse_set(t: float, line: str) -> RolloutSeen | SetSeen | None:
    fields = line.split("|")
    if len(fields) != 3:
        return None
    name, hash_, replicas = fields
    return SetSeen(t, name, hash_, int(replicas or 0))


class RolloutWatch(Watches[RolloutSeen | SetSeen]):
    """The watches of ``app``'s Rollout in ``ns`` and of the namespace's ReplicaSets."""

    def __init__(self, cluster: Cluster, ns: str, app: str) -> None:
        super().__init__(
            cluster,
            (
                (["-n", ns, f"rollouts.argoproj.io/{app}"], _ROLLOUT, parse_rollout),
                (["-n", ns, "replicasets"], _SET, parse_set),
            ),
        )

    def wait_done(self, since: float, image: str, alone: bool, timeout: float = 180) -> float:
        """Blocks until ``done_at`` has a moment; returns it."""
        found = partial(done_at, since=since, image=image, alone=alone)
        return self._wait(found, f"done on {image}", timeout)

    def wait_switched_back(self, since: float, timeout: float = 180) -> float:
        """Blocks until ``switched_back_at`` has a moment; returns it."""
        return self._wait(partial(switched_back_at, since=since), "switched back", timeout)

    def _wait(self, found: Found, what: str, timeout: float) -> float:
        """Until ``found`` has a moment in the watches' lines (read in memory)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ended():
                raise RuntimeError("a watch of the Rollout ended")
            at = found(list(self.seen))
            if at is not None:
                return at
            time.sleep(0.05)
        raise TimeoutError(f"the Rollout not {what} within {timeout:.0f} s")

    def __enter__(self) -> RolloutWatch:
        return self
