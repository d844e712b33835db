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


class Timeline:
    def __init__(self, cluster: Cluster) -> None:
        self.sightings: list[Sighting] = []
        self._procs = [
            subprocess.Popen(
                [
                    cluster.kubectl_bin,
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "get",
                    kind,
                    "--all-namespaces",
                    "--watch",
                    "-o",
                    f"jsonpath={template}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for kind, template in (("pods", _POD), ("services", _SERVICE))
        ]
        self._readers = [
            threading.Thread(target=self._read, args=(proc, kind), daemon=True)
            for proc, kind in zip(self._procs, ("pod", "service"), strict=True)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, proc: subprocess.Popen[str], kind: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.time()
            fields = line.rstrip("\n").split("|")
            if len(fields) != (4 if kind == "pod" else 3):
                continue
            if kind == "pod":
                ns, name, image, ready = fields
                self.sightings.append(Sighting(t, "pod", ns, name, image, ready == "True"))
            else:
                ns, name, selector = fields
                # One text per selector, whatever order kubectl printed its keys in.
                text = json.dumps(json.loads(selector or "{}"), sort_keys=True)
                self.sightings.append(Sighting(t, "service", ns, name, selector=text))

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:  # ours, by their process
            proc.terminate()
            proc.wait(timeout=10)
