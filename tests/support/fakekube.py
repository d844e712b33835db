"""A fake Kubernetes API for unit tests of the client and the tasks: an httpx.MockTransport
handler holding objects by path, on a fake clock, that can be frozen like a SIGSTOPped API
server (a request waits, and gets no answer if the freeze outlasts its timeout)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bascule.kube import Kube, Target

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "https://kube.test"}}]
users: [{name: me, user: {token: secret}}]
contexts: [{name: fake, context: {cluster: fake, user: me}}]
current-context: fake
"""

Handler = Callable[[httpx.Request], httpx.Response | None]


class Clock:
    """Monotonic time that moves only when someone sleeps or a request waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeApi:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.objects: dict[str, dict[str, Any]] = {}
        self.frozen_until = 0.0
        self.requests: list[tuple[str, str]] = []
        # Consulted first, in order; the first to return a response answers the request.
        self.handlers: list[Handler] = []
        self._version = 100

    def freeze(self, seconds: float) -> None:
        """No answers for ``seconds`` from now; requests wait as a frozen server makes them."""
        self.frozen_until = self.clock.now + seconds

    def put(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)
        self.objects[path] = obj
        return obj

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.clock.now < self.frozen_until:
            timeout = request.extensions["timeout"]["read"]
            if self.clock.now + timeout < self.frozen_until:
                self.clock.now += timeout
                raise httpx.ReadTimeout("timed out", request=request)
            self.clock.now = self.frozen_until  # it resumes in time to answer
        for handler in self.handlers:
            resp = handler(request)
            if resp is not None:
                return resp
        return self.serve(request)

    def serve(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"gitVersion": "v1.34.0"})
        if request.method == "GET":
            if request.url.params.get("watch"):
                return httpx.Response(200, text="")  # the watch ends with nothing to report
            if path in self.objects:
                return httpx.Response(200, json=self.objects[path])
            return status(404, "NotFound")
        if request.method == "PATCH" and path in self.objects:
            return self.merge_patch(path, json.loads(request.content))
        return status(405, "MethodNotAllowed")

    def merge_patch(self, path: str, patch: dict[str, Any]) -> httpx.Response:
        current = self.objects[path]
        wanted = patch.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict")
        merged = json.loads(json.dumps(current))
        for key, value in patch.get("spec", {}).items():
            merged.setdefault("spec", {})[key] = value
        return httpx.Response(200, json=self.put(path, merged))

    def count(self, method: str, path: str) -> int:
        return self.requests.count((method, path))


def status(code: int, reason: str) -> httpx.Response:
    return httpx.Response(code, json={"kind": "Status", "reason": reason, "code": code})


def fake_kube(tmp: Path, tolerance: float = 60.0, timeout: float = 10.0) -> tuple[Kube, FakeApi]:
    """A Kube client talking to a fresh FakeApi, on the FakeApi's clock."""
    clock = Clock()
    api = FakeApi(clock)
    config = tmp / "kubeconfig"
    config.write_text(KUBECONFIG)
    kube = Kube(
        Target(str(config)),
        timeout=timeout,
        outage_tolerance=tolerance,
        transport=httpx.MockTransport(api),
        clock=clock,
        sleep=clock.sleep,
    )
    return kube, api
