"""A small Kubernetes API client: kubeconfig conventions from the ``kubernetes`` package,
requests on plain JSON through one keep-alive httpx connection pool.

Plain dicts keep the decision code free of client model classes, and one place for every
request means errors read the same everywhere and requests per deploy can be counted.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import yaml
from kubernetes import config as kconfig
from kubernetes.client import Configuration

from bascule.errors import OperationFailed, UsageError

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeError(OperationFailed):
    """A Kubernetes API request failed; ``status`` is the HTTP code (0: no answer)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.status, self.path = status, path
        super().__init__(f"{method} {path}: {status or 'no answer'} {message}".strip())


@dataclass(frozen=True)
class Target:
    """Which cluster: a kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, as
    kubectl does) and a context in it (default: its current-context)."""

    kubeconfig: str | None = None
    context: str | None = None


def _load(target: Target) -> Configuration:
    """The client configuration; a UsageError naming the kubeconfig and what to fix if it
    cannot be loaded (missing, unreadable, no such context)."""
    cfg = Configuration()
    path = target.kubeconfig or os.environ.get("KUBECONFIG")
    in_cluster = not path and not os.path.exists(os.path.expanduser("~/.kube/config"))
    try:
        if in_cluster and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kconfig.load_incluster_config(client_configuration=cfg)
        else:
            kconfig.load_kube_config(
                config_file=path,
                context=target.context,
                client_configuration=cfg,
                persist_config=False,
            )
    except (kconfig.ConfigException, yaml.YAMLError, OSError) as exc:
        raise UsageError(_kubeconfig_problem(path, target, exc)) from None
    return cfg


def _kubeconfig_problem(path: str | None, target: Target, exc: Exception) -> str:
    source = " (kube.kubeconfig)" if target.kubeconfig else " ($KUBECONFIG)" if path else ""
    where = f"kubeconfig {path or '~/.kube/config'}{source}"
    files = (path or os.path.expanduser("~/.kube/config")).split(os.pathsep)
    if not any(os.path.exists(file) for file in files):
        return (
            f"{where} does not exist — set kube.kubeconfig in the environment's file, or "
            "$KUBECONFIG, to the kubeconfig of the cluster (the file kubectl uses)"
        )
    if target.context and target.context in str(exc):
        return (
            f"{where} has no context {target.context!r} — fix kube.context in the "
            "environment's file (`kubectl config get-contexts` lists them)"
        )
    return f"{where} cannot be used: {' '.join(str(exc).split())} — fix or replace it"


class Kube:
    def __init__(self, target: Target = Target(), timeout: float = 30.0) -> None:
        self.target = target
        self._cfg = _load(target)
        if self._cfg.verify_ssl:
            ssl_ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert)
        else:
            ssl_ctx = ssl.create_default_context()
            ssl_ctx.check_hostname, ssl_ctx.verify_mode = False, ssl.CERT_NONE
        if self._cfg.cert_file:
            ssl_ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        self.requests = 0  # API requests made, for reports and benchmarks
        self.http = httpx.Client(
            base_url=self._cfg.host,
            verify=ssl_ctx,
            timeout=timeout,
            event_hooks={"request": [self._count]},
        )

    @property
    def server(self) -> str:
        return str(self._cfg.host)

    def _count(self, _: httpx.Request) -> None:
        self.requests += 1

    def headers(self) -> dict[str, str]:
        hook = self._cfg.refresh_api_key_hook
        if hook is not None:
            hook(self._cfg)  # exec plugins and expiring tokens
        token = self._cfg.api_key.get("authorization") or self._cfg.api_key.get("BearerToken")
        return {"Authorization": token} if token else {}

    def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Obj:
        headers = self.headers() | {"Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body)
        try:
            resp = self.http.request(
                method,
                path,
                params=params,
                headers=headers,
                content=content,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise KubeError(method, path, 0, f"({type(exc).__name__}: {exc})") from exc
        if resp.status_code >= 400:
            raise KubeError(method, path, resp.status_code, _status_message(resp))
        return resp.json() if resp.content else {}

    def get(self, path: str, **params: str) -> Obj:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> Obj | None:
        try:
            return self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def replace(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Obj, content_type: str = MERGE_PATCH) -> Obj:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path, params={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise

    def watch(
        self, path: str, resource_version: str, timeout: float, **params: str
    ) -> Iterator[tuple[str, Obj]]:
        """(type, object) events of a collection from ``resource_version`` on, for at most
        ``timeout`` seconds. The caller re-lists on 410 Gone (KubeError status 410)."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(timeout))),
        }
        deadline = time.monotonic() + timeout
        with self.http.stream(
            "GET",
            path,
            params=query | params,
            headers=self.headers(),
            timeout=httpx.Timeout(self.http.timeout.connect, read=timeout + 5),
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise KubeError("WATCH", path, resp.status_code, _status_message(resp))
            for line in resp.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise KubeError(
                        "WATCH", path, status.get("code", 500), status.get("message", "")
                    )
                yield event["type"], event["object"]
                if time.monotonic() > deadline:
                    return

    def close(self) -> None:
        self.http.close()


def _status_message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    return str(data.get("message") or data.get("reason") or "")[:500]


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


# Paths of the objects Bascule manages.
def deployments(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def services(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/services" + (f"/{name}" if name else "")


def configmaps(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def leases(ns: str, name: str = "") -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases" + (f"/{name}" if name else "")


def pods(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods"


def events(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/events"


def jobs(ns: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{ns}/jobs" + (f"/{name}" if name else "")
