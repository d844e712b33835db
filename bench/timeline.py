"""Pods and Services as the API server shows them during the rounds, each change stamped
with the bench's clock as it arrives: the sightings ``bench.measure.split_deploy`` splits a
deploy's time with. Two ``kubectl get --watch`` processes, the same for every tool."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from bench.measure import Sighting
from tests.support.cluster import Cluster

_POD = (
    "{.metadata.namespace}|{.metadata.name}|{.spec.containers[0].image}"
    '|{.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
)
_SERVICE = '{.metadata.namespace}|{.metadata.name}|{.spec.selector}{"\\n"}'

T = TypeVar("T")
# A watch's line, with the moment it arrived, as what it shows (None: a line to pass over).
Parser = Callable[[float, str], T | None]


class Watches(Generic[T]):
    """``kubectl get ARGS --watch -o jsonpath=TEMPLATE`` processes, as the cluster's admin;
    each line they print, stamped with the bench's clock as it arrives, is parsed and kept
    in ``seen``. Stopped (by their process) on exit."""

    def __init__(self, cluster: Cluster, watches: Iterable[tuple[list[str], str, Parser[T]]]):
        self.seen: list[T] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._readers: list[threading.Thread] = []
        for args, template, parse in watches:
            argv = [cluster.kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), "get", *args]
            argv += ["--watch", "-o", f"jsonpath={template}"]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            reader = threading.Thread(target=self._read, args=(proc, parse), daemon=True)
            reader.start()
            self._procs.append(proc)
            self._readers.append(reader)

    def _read(self, proc: subprocess.Popen[str], parse: Parser[T]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got = parse(time.time(), line.rstrip("\n"))
            if got is not None:
                self.seen.append(got)

    def ended(self) -> bool:
        """A watch stopped on its own (its object gone, the API server away)."""
        return any(p.poll() is not None for p in self._procs)

    def __exit__(self, *exc: object) -> None:
        """Stops the watches (ours, by their process) and waits for the lines they printed."""
        for proc in self._procs:
            proc.terminate()
            proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=10)


def _pod(t: float, line: str) -> Sighting | None:
    fields = line.split("|")
    if len(fields) != 4:
        return None
    ns, name, image, ready = fields
    return Sighting(t, "pod", ns, name, image, ready == "True")


def _service(t: float, line: str) -> Sighting | None:
    fields = line.split("|")
    if len(fields) != 3:
        return None
    ns, name, selector = fields
    # One text per selector, whatever order kubectl printed its keys in.
    text = json.dumps(json.loads(selector or "{}"), sort_keys=True)
    return Sighting(t, "service", ns, name, selector=text)


class Timeline(Watches[Sighting]):
    def __init__(self, cluster: Cluster) -> None:
        every = "--all-namespaces"
        super().__init__(
            cluster, ((["pods", every], _POD, _pod), (["services", every], _SERVICE, _service))
        )

    @property
    def sightings(self) -> list[Sighting]:
        return self.seen

    def __enter__(self) -> Timeline:
        return self
