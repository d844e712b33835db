"""When Argo Rollouts is done, as watches show it: one ``kubectl get --watch`` of the Rollout
and one of its namespace's ReplicaSets, each change stamped with the bench's clock as it
arrives. Nothing is polled: no ``kubectl get`` process every tenth of a second on the
machine the tools share (issue 24), only two long-lived watches started before the rounds."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.argo.rollouts import HASH_LABEL
from tests.support.cluster import Cluster

_ROLLOUT = (
    "{.metadata.generation}|{.status.observedGeneration}|{.spec.template.spec.containers[0].image}"
    "|{.status.phase}|{.status.stableRS}|{.status.currentPodHash}"
    '|{.status.blueGreen.activeSelector}{"\\n"}'
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


@dataclass(frozen=True)
class SetSeen:
    t: float
    name: str
    hash: str
    replicas: int


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


def parse_rollout(t: float, line: str) -> RolloutSeen | None:
    fields = line.rstrip("\n").split("|")
    return RolloutSeen(t, *fields) if len(fields) == 7 else None


def parse_set(t: float, line: str) -> SetSeen | None:
    fields = line.rstrip("\n").split("|")
    if len(fields) != 3:
        return None
    name, hash_, replicas = fields
    return SetSeen(t, name, hash_, int(replicas or 0))


Parser = Callable[[float, str], RolloutSeen | SetSeen | None]


class RolloutWatch:
    """The two watches of ``app``'s Rollout in ``ns``, as the cluster's admin (not one of the
    identities whose API requests are counted)."""

    def __init__(self, cluster: Cluster, ns: str, app: str) -> None:
        self.seen: list[RolloutSeen | SetSeen] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._readers: list[threading.Thread] = []
        base = [cluster.kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), "-n", ns, "get"]
        watches: tuple[tuple[list[str], str, Parser], ...] = (
            ([f"rollouts.argoproj.io/{app}"], _ROLLOUT, parse_rollout),
            (["replicasets"], _SET, parse_set),
        )
        for what, template, parse in watches:
            argv = [*base, *what, "--watch", "-o", f"jsonpath={template}"]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            reader = threading.Thread(target=self._read, args=(proc, parse), daemon=True)
            reader.start()
            self._procs.append(proc)
            self._readers.append(reader)

    def _read(self, proc: subprocess.Popen[str], parse: Parser) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got = parse(time.time(), line)
            if got is not None:
                self.seen.append(got)

    def wait_done(self, since: float, image: str, alone: bool, timeout: float = 180) -> float:
        """Blocks until ``done_at`` has a moment (read from the watches' lines, in memory);
        returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._procs):
                raise RuntimeError("a watch of the Rollout ended")
            at = done_at(list(self.seen), since, image, alone)
            if at is not None:
                return at
            time.sleep(0.05)
        raise TimeoutError(f"the Rollout not done on {image} within {timeout:.0f} s")

    def __enter__(self) -> RolloutWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.terminate()
            proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=10)
