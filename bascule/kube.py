"""A small Kubernetes API client: kubeconfig conventions from the ``kubernetes`` package (a
plain kubeconfig read here, see ``_load``), requests on plain JSON through one keep-alive
httpx connection pool.

Plain dicts keep the decision code free of client model classes, and one place for every
request means errors read the same everywhere and requests per deploy can be counted.

The API may stop answering for a while (a control-plane upgrade, a leader change): reads,
idempotent writes, watches and requests through the service proxy are retried with backoff
until it has been silent for ``outage_tolerance`` seconds, then fail with ``KubeOutage``.
Writes that may have landed are retried only by callers that re-read first (``retrying``).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import httpx
import yaml

from bascule import __version__
from bascule import kubeconfig as plain_kubeconfig
from bascule.errors import OperationFailed, Unreachable, UsageError
from bascule.rbac import Permission, request_permission
from bascule.redact import clip
from bascule.retry import backoff, retry

Obj = dict[str, Any]
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The configuration key of the outage bound, named in the error that ends a wait.
OUTAGE_SETTING = "kube.outage_tolerance_seconds"
# Liveness probe of the API server itself, to tell its silence from an app's.
PROBE_PATH, PROBE_TIMEOUT = "/version", 2.0
# Longest watch of wait_for_change: a frozen API shows as a stream silent past its end.
WATCH_MAX = 5.0
# A file to append each distinct permission a run's requests ask of RBAC to, one JSON line
# each: what a least-privilege Role must grant (the RBAC test checks it against ours).
RECORD_ENV = "BASCULE_KUBE_RECORD"

log = logging.getLogger(__name__)


class KubeError(OperationFailed):
    """The Kubernetes API refused a request; ``status`` is the HTTP code (0: no answer)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.status, self.path = status, path
        super().__init__(f"{method} {path}: {status or 'no answer'} {message}".strip())


class KubeUnreachable(KubeError, Unreachable):
    """No answer, a timeout, 429 or 5xx: the API did not do the request, or we cannot tell;
    trying again later may succeed."""


class KubeOutage(KubeUnreachable):
    """The API did not answer for longer than the outage tolerance."""

    def __init__(self, silent: float, tolerance: float, last: KubeError) -> None:
        self.status, self.path = last.status, last.path
        Exception.__init__(
            self,
            f"the Kubernetes API did not answer for {silent:.0f} s (longer than "
            f"{OUTAGE_SETTING}, {tolerance:g} s): {last}",
        )


def _error(method: str, path: str, status: int, message: str) -> KubeError:
    unreachable = status == 0 or status == 429 or status >= 500
    return (KubeUnreachable if unreachable else KubeError)(method, path, status, message)


@dataclass(frozen=True)
class Target:
    """Which cluster: a kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, as
    kubectl does) and a context in it (default: its current-context)."""

    kubeconfig: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class _Access:
    """What requests need of a kubeconfig: the server, the TLS context that checks it and
    holds any client certificate, the CA (PEM bytes or a file; None: the system's) and the
    headers that carry a token."""

    host: str
    verify: bool
    ca: bytes | str | None
    tls: ssl.SSLContext
    headers: Callable[[], dict[str, str]]


def _load(target: Target) -> _Access:
    """The cluster and credential; a UsageError naming the kubeconfig and what to fix if it
    cannot be loaded (missing, unreadable, no such context).

    A plain kubeconfig (``kubeconfig.plain``: a server, a CA, a token or a client
    certificate) is read here; any other, and the in-cluster configuration, by the kubernetes
    package. Measured reason: importing that package is most of the import time of a quick
    command such as `bascule status` (it imports its whole generated API client), and a plain
    kubeconfig is what Bascule's own workers and the local cluster use."""
    path = target.kubeconfig or os.environ.get("KUBECONFIG")
    in_cluster = (
        not path
        and not os.path.exists(os.path.expanduser("~/.kube/config"))
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    try:
        if not in_cluster:
            found = _read_plain(path or os.path.expanduser("~/.kube/config"), target.context)
            if found is not None:
                return _plain_access(found)
        return _package_access(target, path, in_cluster)
    except (ssl.SSLError, OSError) as exc:  # a CA or client certificate that is not one
        raise UsageError(_kubeconfig_problem(path, target, exc)) from None


def _read_plain(path: str, context: str | None) -> plain_kubeconfig.Plain | None:
    """``path``'s context if it is plain; None if not, or if it cannot be read as one (the
    kubernetes package then reads it, or says what is wrong)."""
    if os.pathsep in path:  # several files, merged: the package's rules
        return None
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return plain_kubeconfig.plain(config, context, os.path.dirname(os.path.abspath(path)))


def _tls(verify: bool, ca: bytes | str | None) -> ssl.SSLContext:
    """Checking the server against ``ca`` (PEM bytes, a file; None: the system's CAs), or
    not at all."""
    if not verify:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        return tls
    if isinstance(ca, bytes):
        return ssl.create_default_context(cadata=ca.decode("ascii", errors="replace"))
    return ssl.create_default_context(cafile=ca)


def _plain_access(found: plain_kubeconfig.Plain) -> _Access:
    tls = _tls(not found.insecure, found.ca)
    if found.cert is not None and found.key is not None:
        _load_cert_chain(tls, found.cert, found.key)
    headers = {"Authorization": f"Bearer {found.token}"} if found.token else {}
    return _Access(found.server, not found.insecure, found.ca, tls, lambda: dict(headers))


def _load_cert_chain(tls: ssl.SSLContext, cert: bytes | str, key: bytes | str) -> None:
    """The client certificate and key, inline ones through files of a private directory
    that exist only while ssl reads them (ssl loads a chain from files alone)."""
    with tempfile.TemporaryDirectory(prefix="bascule-kube-") as private:
        files = []
        for name, value in (("cert", cert), ("key", key)):
            if isinstance(value, bytes):
                written = os.path.join(private, name)
                with open(os.open(written, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                    out.write(value)
                value = written
            files.append(value)
        try:
            tls.load_cert_chain(files[0], files[1])
        except OSError as exc:  # ssl.SSLError too; neither names the files
            named = [v if isinstance(v, str) else "(inline data)" for v in (cert, key)]
            raise OSError(f"client certificate {named[0]} and key {named[1]}: {exc}") from None


def _package_access(target: Target, path: str | None, in_cluster: bool) -> _Access:
    from kubernetes import config as kconfig
    from kubernetes.client import Configuration

    cfg = Configuration()
    try:
        if in_cluster:
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
    tls = _tls(bool(cfg.verify_ssl), cfg.ssl_ca_cert)
    if cfg.cert_file:
        tls.load_cert_chain(cfg.cert_file, cfg.key_file)

    def headers() -> dict[str, str]:
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)  # exec plugins and expiring tokens
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        return {"Authorization": token} if token else {}

    return _Access(str(cfg.host), bool(cfg.verify_ssl), cfg.ssl_ca_cert, tls, headers)


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
    """``transport`` replaces the network (httpx.MockTransport in unit tests); ``clock`` and
    ``sleep`` the time, so tests of backoff need not wait."""

    def __init__(
        self,
        target: Target = Target(),
        timeout: float = 30.0,
        *,
        outage_tolerance: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self._access = _load(target)
        self.requests = 0  # API requests made, for reports and benchmarks
        self._record = os.environ.get(RECORD_ENV) or None
        self._recorded: set[Permission] = set()
        self.timeout = timeout
        self.outage_tolerance = outage_tolerance
        self.outage_seconds = 0.0  # time the API was found silent, summed over outages
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._last_answer: float | None = None  # None: the API never answered us yet
        self._silent_since: float | None = None  # set while an outage is going on
        self.http = httpx.Client(
            base_url=self._access.host,
            verify=self._access.tls,
            timeout=timeout,
            transport=transport,
            event_hooks={"request": [self._count]},
            # Names Bascule in the API server's audit log and per-client metrics.
            headers={"User-Agent": f"bascule/{__version__}"},
        )

    @property
    def server(self) -> str:
        return self._access.host

    @property
    def tls(self) -> tuple[bool, bytes | None]:
        """Whether the server's certificate is checked, and the PEM of the CA it is checked
        against (None: the system's CAs)."""
        ca = self._access.ca
        if isinstance(ca, str):
            with open(ca, "rb") as file:
                ca = file.read()
        return self._access.verify, ca

    def _count(self, request: httpx.Request) -> None:
        with self._lock:  # requests are sent from several threads of a run
            self.requests += 1
        if self._record is not None:
            self._note(request, self._record)

    def _note(self, request: httpx.Request, record: str) -> None:
        asked = request_permission(request.method, request.url.path, request.url.params)
        if asked is None:
            return
        with self._lock:
            if asked in self._recorded:
                return
            self._recorded.add(asked)
            # One short line per write in append mode: processes sharing the file interleave
            # whole lines.
            with open(record, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(asked)) + "\n")

    def headers(self) -> dict[str, str]:
        return self._access.headers()

    # --- outages -------------------------------------------------------------------------------

    def active_time(self) -> float:
        """A monotonic clock that stands still while the API does not answer: deadlines of
        waits and checks measured on it are not eaten by an outage the run waits out."""
        with self._lock:
            now = self._clock()
            ongoing = now - self._silent_since if self._silent_since is not None else 0.0
            return now - self.outage_seconds - ongoing

    def _answered(self) -> None:
        with self._lock:
            now = self._clock()
            self._last_answer = now
            if self._silent_since is None:
                return
            lasted, self._silent_since = now - self._silent_since, None
            self.outage_seconds += lasted
        log.warning("the Kubernetes API at %s answers again after %.1f s", self.server, lasted)

    def _unanswered(self, exc: KubeUnreachable, sent: float, attempt: int) -> float | None:
        """After a try that got no usable answer: the wait before the next try, or None to
        raise ``exc`` (KubeOutage past the bound).

        The outage is counted from the last sign of life, at the earliest from when the try
        was sent. An API that never answered this client is not having an outage but is the
        wrong address or down: that fails at once, as does a tolerance of 0, and an outage
        already past the bound (a KubeOutage from a retried read inside ``fn``)."""
        if isinstance(exc, KubeOutage):
            return None
        with self._lock:
            if self._last_answer is None or self.outage_tolerance <= 0:
                return None
            since = self._silent_since
            starts = since is None
            if since is None:
                since = self._silent_since = max(sent, self._last_answer)
            silent = self._clock() - since
            if silent >= self.outage_tolerance:
                # This outage is reported; the clean-up that follows gets a whole bound again.
                self.outage_seconds += silent
                self._silent_since = None
                raise KubeOutage(silent, self.outage_tolerance, exc) from exc
        if starts:
            log.warning(
                "the Kubernetes API at %s does not answer (%s); trying again for up to %g s",
                self.server,
                exc,
                self.outage_tolerance,
            )
        return min(backoff(attempt), self.outage_tolerance - silent)

    def _attempt_timeout(self) -> float:
        """A request unanswered for the whole tolerance is an outage: no try waits longer."""
        with self._lock:
            if self.outage_tolerance <= 0 or self._last_answer is None:
                return self.timeout
            ongoing = self._clock() - self._silent_since if self._silent_since is not None else 0
            return min(self.timeout, max(1.0, self.outage_tolerance - ongoing))

    def retrying(self, fn: Callable[[], T]) -> T:
        """``fn()``, tried again with backoff while the API does not answer, until the outage
        tolerance runs out. ``fn`` must be safe to repeat: a read, an idempotent write, or a
        write that re-reads first (a write whose answer was lost may have landed)."""
        sent = 0.0

        def sending() -> T:
            nonlocal sent
            sent = self._clock()
            return fn()

        return retry(
            sending,
            lambda exc, attempt: self._unanswered(exc, sent, attempt),
            KubeUnreachable,
            sleep=self._sleep,
        )

    # --- requests ------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        content: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            resp = self.http.request(
                method,
                path,
                params=params,
                headers=self.headers() | headers,
                content=content,
                timeout=timeout if timeout is not None else self._attempt_timeout(),
            )
        except httpx.HTTPError as exc:
            raise KubeUnreachable(method, path, 0, f"({type(exc).__name__}: {exc})") from exc
        if resp.status_code >= 400:
            err = _error(method, path, resp.status_code, _status_message(resp))
            if not isinstance(err, KubeUnreachable):
                self._answered()  # a refusal is an answer: the API is up
            raise err
        self._answered()
        return resp

    def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Obj:
        """One API request; retried through an outage when ``idempotent`` (default: GET and
        DELETE), else KubeUnreachable goes to the caller, who knows whether a repeat is safe."""
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body)

        def once() -> Obj:
            resp = self._send(
                method, path, headers=headers, params=params, content=content, timeout=timeout
            )
            return resp.json() if resp.content else {}

        if idempotent if idempotent is not None else method in ("GET", "DELETE"):
            return self.retrying(once)
        return once()

    def get(self, path: str, **params: str) -> Obj:
        return self.request("GET", path, params=params or None)

    def get_text(self, path: str, **params: str) -> str:
        """A plain-text read, such as a pod's log."""
        return self.retrying(
            lambda: self._send("GET", path, headers={"Accept": "*/*"}, params=params or None).text
        )

    def get_or_none(self, path: str, **params: str) -> Obj | None:
        try:
            return self.get(path, **params)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(
        self, path: str, body: Obj, *, idempotent: bool = False, timeout: float | None = None
    ) -> Obj:
        return self.request("POST", path, body, idempotent=idempotent, timeout=timeout)

    def replace(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body)

    def patch(
        self, path: str, body: Obj, content_type: str = MERGE_PATCH, *, idempotent: bool = False
    ) -> Obj:
        return self.request("PATCH", path, body, content_type=content_type, idempotent=idempotent)

    def apply(self, path: str, body: Obj, field_manager: str, **params: str) -> Obj:
        """Server-side apply, forcing our fields: the same request twice is one change.
        ``params`` add query parameters, e.g. ``dryRun="All"``."""
        return self.request(
            "PATCH",
            path,
            body,
            content_type=APPLY_PATCH,
            params={"fieldManager": field_manager, "force": "true", **params},
            idempotent=True,
        )

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path, params={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise

    def proxy(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> tuple[httpx.Response, float]:
        """A request to a Service through the API server's service proxy: the app's answer,
        whatever its status, and the seconds its try took (not the outage before it).

        No answer is the app's failure (the httpx error is raised) only if the API itself
        answers, twice, since a request the API held while it was frozen looks the same;
        while the API does not answer, it is tried again up to the outage bound, and once
        more after it is back, so that the answer's time is the app's."""
        app_silent = False

        def once() -> tuple[httpx.Response, float]:
            nonlocal app_silent
            sent, in_outage = self._clock(), self._silent_since is not None
            try:
                resp = self.http.request(
                    method,
                    path,
                    headers=self.headers() | (headers or {}),
                    json=json_body,
                    timeout=min(timeout, self._attempt_timeout()),
                )
            except httpx.TransportError as exc:
                if not self._api_answers():
                    raise KubeUnreachable(
                        method, path, 0, f"({type(exc).__name__}: {exc})"
                    ) from exc
                if app_silent:
                    raise
                app_silent = True
                return once()
            self._answered()
            if in_outage:  # the API came back during this try: its time is the API's
                return once()
            return resp, self._clock() - sent

        return self.retrying(once)

    def _api_answers(self) -> bool:
        try:
            self._send(
                "GET", PROBE_PATH, headers={}, timeout=min(PROBE_TIMEOUT, self._attempt_timeout())
            )
        except KubeUnreachable:
            return False
        except KubeError:
            pass  # a refusal is an answer
        return True

    def watch(
        self, path: str, resource_version: str, timeout: float, **params: str
    ) -> Iterator[tuple[str, Obj]]:
        """(type, object) events of a collection from ``resource_version`` on, for at most
        ``timeout`` seconds. The caller re-lists on 410 Gone (KubeError status 410); a
        broken stream raises KubeUnreachable."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(timeout))),
        }
        deadline = self._clock() + timeout
        try:
            with self.http.stream(
                "GET",
                path,
                params=query | params,
                headers=self.headers(),
                timeout=httpx.Timeout(self._attempt_timeout(), read=timeout + 5),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error("WATCH", path, resp.status_code, _status_message(resp))
                self._answered()
                for line in resp.iter_lines():
                    self._answered()
                    if not line:
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        status = event["object"]
                        raise _error(
                            "WATCH", path, status.get("code", 500), status.get("message", "")
                        )
                    yield event["type"], event["object"]
                    if self._clock() > deadline:
                        return
        except httpx.HTTPError as exc:
            raise KubeUnreachable("WATCH", path, 0, f"({type(exc).__name__}: {exc})") from exc

    def wait_for_change(
        self, path: str, resource_version: str, timeout: float, **params: str
    ) -> None:
        """Returns at the first event on a collection after ``resource_version``, after
        ``timeout`` (at most WATCH_MAX) seconds, or when the watch breaks (410 Gone, a
        dropped or unanswered stream): the caller looks again in every case. A watch the
        API leaves unanswered counts towards the outage bound like any request, and is
        re-established by the caller's next look."""
        sent = self._clock()
        try:
            for _ in self.watch(path, resource_version, min(timeout, WATCH_MAX), **params):
                return
        except KubeUnreachable as exc:  # one try: the caller's next look is the next
            wait = self._unanswered(exc, sent, 1)
            if wait is None:
                raise
            self._sleep(wait)
        except KubeError as exc:
            if exc.status != 410:
                raise

    def close(self) -> None:
        self.http.close()


def _status_message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return clip(resp.text, 300)
    return clip(str(data.get("message") or data.get("reason") or ""), 500)


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


# Paths of the objects Bascule manages.
def deployments(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def services(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/services" + (f"/{name}" if name else "")


def configmaps(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def secrets(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/secrets" + (f"/{name}" if name else "")


def leases(ns: str, name: str = "") -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases" + (f"/{name}" if name else "")


def replicasets(ns: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/replicasets"


def pods(ns: str = "") -> str:
    """The pods of namespace ``ns``; of every namespace without it."""
    return f"/api/v1/namespaces/{ns}/pods" if ns else "/api/v1/pods"


def nodes() -> str:
    return "/api/v1/nodes"


def events(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/events"


def jobs(ns: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{ns}/jobs" + (f"/{name}" if name else "")
