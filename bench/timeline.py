"""Pods and Services as the API server shows them during the rounds, each change stamped
with the bench's clock as it arrives: the sightings ``bench.measure.split_deploy`` splits a
deploy's time with. Two ``kubectl get --watch`` processes, the same for every tool."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from bench.measure import Sighting
from tests.support.cluster import Cluster

_POD = (
    "{.metadata.namespace}|{.metadata.name}|{.spec.containers[0].image}"
    '|{.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
)
_SERVICE = '{.metadata.namespace}|{.metadata.name}|{.spec.selector}{"\\n"}'


# What each watch prints, a line per object as it changes: (resource, sighting kind, jsonpath).
_WATCHES = (("pods", "pod", _POD), ("services", "service", _SERVICE))


class Timeline:
    def __init__(self, cluster: Cluster) -> None:
        self.sightings: list[Sighting] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._readers: list[threading.Thread] = []
        for resource, kind, template in _WATCHES:
            argv = [cluster.kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), "get"]
            argv += [resource, "--all-namespaces", "--watch", "-o", f"jsonpath={template}"]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            reader = threading.Thread(target=self._read, args=(proc, kind), daemon=True)
            reader.start()
            self._procs.append(proc)
            self._readers.append(reader)

    def _read(self, proc: subprocess.Popen[str], kind: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.time()
            fields = line.rstrip("\n").split("|")
            if kind == "pod" and len(fields) == 4:
                ns, name, image, ready = fields
                self.sightings.append(Sighting(t, "pod", ns, name, image, ready == "True"))
            elif kind == "service" and len(fields) == 3:
                ns, name, selector = fields
                # One text per selector, whatever order kubectl printed its keys in.
                text = json.dumps(json.loads(selector or "{}"), sort_keys=True)
                self.sightings.append(Sighting(t, "service", ns, name, selector=text))

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops the watches (ours, by their process) and waits for the lines they printed."""
        for proc in self._procs:
            proc.terminate()
            proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=10)
