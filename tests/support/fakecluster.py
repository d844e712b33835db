"""A fake namespace of a Kubernetes cluster for in-process tests of the flows: the API
objects Bascule reads and writes (create, replace, merge and apply patches, deletes, lists by
label), a Deployment controller that makes pods behave as each image is told to, the
EndpointSlices of a Service, the app answering through the service proxy, and Jobs.

Every change a client makes is recorded as an ``Action``, in order, so that a test can
compare the exact list of changes with the one it expects, as a controller's unit tests do
against a fake clientset. The clock is the real one: the flows' waits are made short by
their configuration, and watches return after WATCH_PAUSE with nothing to report (the
caller looks again).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx

from bascule import kube as k
from bascule.kube import APPLY_PATCH, Kube, Target
from bascule.manifests import ANNOTATION_CLAIMED, ANNOTATION_RELEASE, LABEL_COLOR, LABEL_RELEASE
from tests.support.fakekube import KUBECONFIG, Clock, FakeApi, status

Obj = dict[str, Any]
WATCH_PAUSE = 0.05  # how long a watch stays open before it ends with nothing to report
# The kinds whose changes are traffic and capacity (``FakeCluster.changes``).
WORKLOADS = ("deployments", "services", "jobs")

PodsDo = Literal[
    "ready",  # every pod Ready
    "crashloop",  # CrashLoopBackOff
    "pull-error",  # ErrImagePull
    "never-ready",  # running, never Ready, no probe failure recorded
    "failing-readiness",  # running, its readiness probe keeps failing (events)
    "unschedulable",  # Pending: no node fits
    "quota",  # no pod at all: the ReplicaSet may not create them
]


@dataclass(frozen=True)
class Image:
    """How an image behaves once deployed: its pods, and the paths its app answers 500 on,
    always or only when reached through the active Service."""

    pods: PodsDo = "ready"
    failing: frozenset[str] = frozenset()
    failing_when_active: frozenset[str] = frozenset()


class Action(NamedTuple):
    """One change a client made: verb (create, replace, apply, patch, delete), the object
    as ``kind/name``, and its key fields."""

    verb: str
    obj: str
    change: str = ""


def tag(image: str) -> str:
    return image.rpartition(":")[2]


def digest(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(labels: dict[str, str] | None, selector: str | None) -> bool:
    """Whether ``labels`` satisfy an equality label selector ``a=b,c=d``."""
    if not selector:
        return True
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    return wanted.items() <= (labels or {}).items()


def _deep_merge(base: Obj, patch: Obj) -> Obj:
    """A JSON merge patch (RFC 7386)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class _Path:
    collection: str  # e.g. /api/v1/namespaces/ns/pods
    kind: str  # the plural: pods
    name: str | None
    sub: str | None  # log, proxy...
    rest: str = ""  # what follows the subresource (a proxied path)


def parse(path: str) -> _Path | None:
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 5 and parts[2] == "namespaces":
        head = 3
    elif parts[:1] == ["apis"] and len(parts) >= 6 and parts[3] == "namespaces":
        head = 4
    else:
        return None
    collection = "/" + "/".join(parts[: head + 2])
    kind = parts[head + 1]
    name = parts[head + 2] if len(parts) > head + 2 else None
    sub = parts[head + 3] if len(parts) > head + 3 else None
    rest = "/" + "/".join(parts[head + 4 :]) if len(parts) > head + 4 else "/"
    return _Path(collection, kind, name, sub, rest)


class FakeCluster(FakeApi):
    """One namespace of a cluster. ``images``: how each image behaves (default: well);
    ``job_logs``: by a Job's image, the log its pod prints (with FAIL in it, the Job fails);
    ``job_script``, when set: that log, given the Job."""

    def __init__(self, namespace: str) -> None:
        super().__init__(Clock())  # the fake clock is unused: requests are never frozen here
        self.namespace = namespace
        self.images: dict[str, Image] = {}
        self.job_logs: dict[str, str] = {}
        self.job_script: Callable[[Obj], str] | None = None
        self.actions: list[Action] = []
        self._guard = threading.RLock()
        self.put(f"/api/v1/namespaces/{namespace}", {"kind": "Namespace"})

    def settle_versions(self) -> None:
        """The next resourceVersion after every object's, once objects were put in by hand."""
        held = [int(o.get("metadata", {}).get("resourceVersion", 0)) for o in self.objects.values()]
        self._version = max([self._version, *held])

    # --- what tests look at ----------------------------------------------------------------

    def changes(self, kinds: tuple[str, ...] = WORKLOADS) -> list[Action]:
        """The actions on objects of ``kinds``, in order."""
        return [a for a in self.actions if a.obj.split("/")[0] in kinds]

    def obj(self, kind: str, name: str) -> Obj | None:
        return self.objects.get(self.collection(kind) + "/" + name)

    def collection(self, kind: str) -> str:
        named = {
            "deployments": k.deployments,
            "services": k.services,
            "configmaps": k.configmaps,
            "leases": k.leases,
            "jobs": k.jobs,
        }
        return named[kind](self.namespace)

    # --- requests ---------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("watch"):
            time.sleep(WATCH_PAUSE)  # outside the lock: other threads go on meanwhile
            return httpx.Response(200, text="")
        with self._guard:  # a run's renewer and checks use the client from other threads
            self.requests.append((request.method, request.url.path))
            resp = next(filter(None, (handler(request) for handler in self.handlers)), None)
            if resp is None:
                resp = self.serve(request)
            self.record(request, resp)
            return resp

    def record(self, request: httpx.Request, resp: httpx.Response) -> None:
        """Every change asked for, answered or refused (then with the status it got), as a
        fake clientset records actions before its reactors answer them."""
        where = parse(request.url.path)
        writes = request.method in ("POST", "PUT", "PATCH", "DELETE")
        if where is None or not writes or request.url.params.get("dryRun"):
            return
        body = json.loads(request.content) if request.content else None
        name = where.name or (body or {}).get("metadata", {}).get("name")
        verb = {"POST": "create", "PUT": "replace", "DELETE": "delete"}.get(request.method)
        if verb is None:
            verb = "apply" if request.headers.get("content-type") == APPLY_PATCH else "patch"
        change = describe(where.kind, body)
        if resp.status_code >= 400:
            change = f"{change} → {resp.status_code}".strip()
        self.actions.append(Action(verb, f"{where.kind}/{name}", change))

    def serve(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        params = request.url.params
        if path == "/version":
            return httpx.Response(200, json={"gitVersion": "v1.34.0"})
        if path.endswith("/selfsubjectrulesreviews"):
            everything = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
            return httpx.Response(201, json={"status": {"resourceRules": [everything]}})
        if path in ("/api/v1/nodes", "/api/v1/pods"):
            return status(403, "Forbidden")  # a namespaced role: no capacity estimate
        where = parse(path)
        if where is None:
            return super().serve(request)
        if where.sub == "proxy":
            return self.app_answer(where, request.method)
        if where.sub == "log":
            return self.pod_log(where.name or "")
        body = json.loads(request.content) if request.content else None
        if method == "GET":
            return self.get(where, path, params.get("labelSelector"), params.get("fieldSelector"))
        if method == "POST":
            return self.create(where, body or {})
        if method == "PUT":
            return self.replace(where, path, body or {})
        if method == "PATCH":
            if request.headers.get("content-type") == APPLY_PATCH:
                return self.apply(where, path, body or {}, params.get("dryRun") == "All")
            return self.patch(where, path, body or {})
        if method == "DELETE":
            return self.remove(where, path)
        return status(405, "MethodNotAllowed")

    # --- reads ------------------------------------------------------------------------------

    def get(
        self, where: _Path, path: str, labels: str | None, fields: str | None
    ) -> httpx.Response:
        if where.name is not None:
            found = self.objects.get(path)
            if found is None:
                return status(404, "NotFound")
            if where.kind == "deployments":
                found = self.with_status(found)
            return httpx.Response(200, json=found)
        items = self.listing(where, labels, fields)
        self._version += 1  # a list's resourceVersion, for the watch that follows it
        meta = {"resourceVersion": str(self._version)}
        return httpx.Response(200, json={"metadata": meta, "items": items})

    def listing(self, where: _Path, labels: str | None, fields: str | None) -> list[Obj]:
        if where.kind == "pods":
            return [
                p for p in self.pods() + self.job_pods() if matches(p["metadata"]["labels"], labels)
            ]
        if where.kind == "replicasets":
            return [rs for rs in self.replicasets() if matches(rs["metadata"]["labels"], labels)]
        if where.kind == "endpointslices":
            return self.endpoint_slices(labels)
        if where.kind == "events":
            return self.events(fields)
        prefix = where.collection + "/"
        stored = [
            self.with_status(o) if where.kind == "deployments" else o
            for p, o in self.objects.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]
        return [o for o in stored if matches(o.get("metadata", {}).get("labels"), labels)]

    # --- writes -----------------------------------------------------------------------------

    def create(self, where: _Path, body: Obj) -> httpx.Response:
        name = body["metadata"]["name"]
        where = _Path(where.collection, where.kind, name, None)
        path = f"{where.collection}/{name}"
        if path in self.objects:
            return status(409, "AlreadyExists")
        obj = copy.deepcopy(body)
        obj["metadata"].setdefault("generation", 1)
        obj["metadata"]["creationTimestamp"] = now_iso()
        if where.kind == "jobs":
            obj["status"] = self.job_status(obj)
        return httpx.Response(201, json=self.put(path, obj))

    def guarded(self, path: str, body: Obj) -> Obj | httpx.Response:
        """The object a replace or a patch changes, or the refusal: it does not exist, or
        the change carries a resourceVersion that is no longer the object's."""
        current = self.objects.get(path)
        if current is None:
            return status(404, "NotFound")
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict")
        return current

    def replace(self, where: _Path, path: str, body: Obj) -> httpx.Response:
        current = self.guarded(path, body)
        if isinstance(current, httpx.Response):
            return current
        return httpx.Response(200, json=self.put(path, copy.deepcopy(body)))

    def patch(self, where: _Path, path: str, body: Obj) -> httpx.Response:
        current = self.guarded(path, body)
        if isinstance(current, httpx.Response):
            return current
        merged = _deep_merge(current, body)
        if merged.get("spec") != current.get("spec"):
            merged["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return httpx.Response(200, json=self.put(path, merged))

    def apply(self, where: _Path, path: str, body: Obj, dry_run: bool) -> httpx.Response:
        """Server-side apply of the whole object, as Bascule applies it: its fields win."""
        current = self.objects.get(path)
        obj = copy.deepcopy(body)
        generation = 1
        if current is not None:
            generation = current["metadata"].get("generation", 1)
            generation += current.get("spec") != obj.get("spec")
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj["metadata"]["generation"] = generation
        if dry_run:
            return httpx.Response(200, json=obj)
        return httpx.Response(200, json=self.put(path, obj))

    def remove(self, where: _Path, path: str) -> httpx.Response:
        if self.objects.pop(path, None) is None:
            return status(404, "NotFound")
        return httpx.Response(200, json={"kind": "Status", "status": "Success"})

    # --- the controllers --------------------------------------------------------------------

    def image_of(self, dep: Obj) -> str:
        return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])

    def deployments(self) -> list[Obj]:
        prefix = self.collection("deployments") + "/"
        return [o for p, o in self.objects.items() if p.startswith(prefix)]

    def behaviour(self, image: str) -> Image:
        return self.images.get(image, Image())

    def with_status(self, dep: Obj) -> Obj:
        """The Deployment as its controller reports it, given its pods."""
        want = dep["spec"].get("replicas", 0)
        ready = want if self.behaviour(self.image_of(dep)).pods == "ready" else 0
        out = copy.deepcopy(dep)
        created = 0 if self.behaviour(self.image_of(dep)).pods == "quota" else want
        out["status"] = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": created,
            "updatedReplicas": created,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        return out

    def pods(self) -> list[Obj]:
        out = []
        for dep in self.deployments():
            image, name = self.image_of(dep), dep["metadata"]["name"]
            labels = dict(dep["spec"]["template"]["metadata"]["labels"])
            does = self.behaviour(image).pods
            if does == "quota":
                continue
            for i in range(dep["spec"].get("replicas", 0)):
                pod_name = f"{name}-{labels.get(LABEL_RELEASE, 'x')[-6:]}-{i}"
                out.append(
                    {
                        "metadata": {"name": pod_name, "labels": labels},
                        "spec": {
                            "containers": dep["spec"]["template"]["spec"]["containers"],
                            **({} if does == "unschedulable" else {"nodeName": "node-1"}),
                        },
                        "status": pod_status(does, image),
                    }
                )
        return out

    def replicasets(self) -> list[Obj]:
        out = []
        for dep in self.deployments():
            labels = dict(dep["spec"]["template"]["metadata"]["labels"])
            name = f"{dep['metadata']['name']}-{labels.get(LABEL_RELEASE, 'x')[-6:]}"
            conditions = []
            if self.behaviour(self.image_of(dep)).pods == "quota":
                conditions.append(
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": f'pods "{name}-a" is forbidden: exceeded quota: pods, '
                        "requested: pods=1, used: pods=2, limited: pods=2",
                    }
                )
            out.append(
                {"metadata": {"name": name, "labels": labels}, "status": {"conditions": conditions}}
            )
        return out

    def events(self, fields: str | None) -> list[Obj]:
        if fields != "reason=Unhealthy":
            return []
        return [
            {
                "involvedObject": {"name": p["metadata"]["name"]},
                "reason": "Unhealthy",
                "type": "Warning",
                "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
                "count": 5,
            }
            for p in self.pods()
            if self.behaviour(p["spec"]["containers"][0]["image"]).pods == "failing-readiness"
        ]

    def pod_log(self, name: str) -> httpx.Response:
        """A Job's pod prints the Job's log (``job_log``); an app's pod, a line."""
        ran = next((job for job in self.jobs() if f"{job['metadata']['name']}-pod" == name), None)
        return httpx.Response(200, text="starting\n" if ran is None else self.job_log(ran))

    def service_color(self, service: str) -> str | None:
        svc = self.obj("services", service)
        return None if svc is None else svc["spec"]["selector"].get(LABEL_COLOR)

    def endpoint_slices(self, labels: str | None) -> list[Obj]:
        service = (labels or "").partition("kubernetes.io/service-name=")[2]
        color = self.service_color(service)
        ready = [
            p
            for p in self.pods()
            if p["metadata"]["labels"].get(LABEL_COLOR) == color and p["status"].get("ready")
        ]
        endpoints = [
            {"conditions": {"ready": True}, "targetRef": {"name": p["metadata"]["name"]}}
            for p in ready
        ]
        return [{"metadata": {"name": f"{service}-x"}, "endpoints": endpoints}]

    def app_answer(self, where: _Path, method: str) -> httpx.Response:
        """The app behind a Service, through the API server's service proxy."""
        service = (where.name or "").partition(":")[0]
        color = self.service_color(service)
        dep = next(
            (
                d
                for d in self.deployments()
                if d["spec"]["selector"]["matchLabels"].get(LABEL_COLOR) == color
            ),
            None,
        )
        if (
            dep is None
            or not dep["spec"].get("replicas")
            or self.with_status(dep)["status"]["readyReplicas"] == 0
        ):
            return status(503, "ServiceUnavailable")  # no endpoints available
        image = self.image_of(dep)
        does = self.behaviour(image)
        active = "-preview" not in service
        if where.rest in does.failing or (active and where.rest in does.failing_when_active):
            return httpx.Response(500, json={"error": "injected"})
        if where.rest == "/version":
            return httpx.Response(200, json={"version": tag(image), "color": color})
        return httpx.Response(200, json={"ok": True})

    # --- Jobs -------------------------------------------------------------------------------

    def job_log(self, job: Obj) -> str:
        """What a Job's pod prints: ``job_logs`` by its image, unless ``job_script`` says."""
        if self.job_script is not None:
            return self.job_script(job)
        return self.job_logs.get(job["spec"]["template"]["spec"]["containers"][0]["image"], "")

    def job_status(self, job: Obj) -> Obj:
        """A Job is done as soon as it exists: Complete unless its log says FAIL."""
        failed = "FAIL" in self.job_log(job)
        kind = "Failed" if failed else "Complete"
        reason = "BackoffLimitExceeded" if failed else "Completed"
        return {"conditions": [{"type": kind, "status": "True", "reason": reason}]}

    def jobs(self) -> list[Obj]:
        prefix = self.collection("jobs") + "/"
        return [job for path, job in self.objects.items() if path.startswith(prefix)]

    def job_pods(self) -> list[Obj]:
        return [
            {
                "metadata": {
                    "name": f"{job['metadata']['name']}-pod",
                    "labels": {"job-name": job["metadata"]["name"]},
                },
                "spec": {
                    "containers": job["spec"]["template"]["spec"]["containers"],
                    "nodeName": "node-1",
                },
                "status": {"phase": "Succeeded"},
            }
            for job in self.jobs()
        ]


def pod_status(does: PodsDo, image: str) -> Obj:
    repo = image.rpartition(":")[0]
    started = {
        "name": "app",
        "started": True,
        "imageID": f"{repo}@{digest(image)}",
        "restartCount": 0,
    }
    if does == "ready":
        return {
            "phase": "Running",
            "ready": True,  # not Kubernetes': what the fake's EndpointSlices read
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{**started, "ready": True, "state": {"running": {}}}],
        }
    if does in ("never-ready", "failing-readiness"):
        return {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{**started, "ready": False, "state": {"running": {}}}],
        }
    if does == "unschedulable":
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": now_iso(),
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                }
            ],
        }
    waiting = {
        "crashloop": ("CrashLoopBackOff", "back-off 10s restarting failed container"),
        "pull-error": ("ErrImagePull", f"failed to pull image {image}: not found"),
    }[does]
    return {
        "phase": "Running" if does == "crashloop" else "Pending",
        "containerStatuses": [
            {
                "name": "app",
                "ready": False,
                "restartCount": 3 if does == "crashloop" else 0,
                "state": {"waiting": {"reason": waiting[0], "message": waiting[1]}},
            }
        ],
    }


def describe(kind: str, body: Obj | None) -> str:
    """The key fields of a change asked for: what a traffic or capacity decision set."""
    spec = (body or {}).get("spec", {})
    if kind == "services" and "selector" in spec:
        return f"selector={spec['selector'].get(LABEL_COLOR)}"
    if kind == "deployments" and set(spec) == {"replicas"}:
        return f"replicas={spec['replicas']}"
    if kind == "deployments" and body is not None and not spec:
        return f"claimed-by={body['metadata']['annotations'][ANNOTATION_CLAIMED]}"
    if kind == "deployments" and body is not None:
        image = spec["template"]["spec"]["containers"][0]["image"]
        release = body["metadata"].get("annotations", {}).get(ANNOTATION_RELEASE)
        return f"image={image} replicas={spec.get('replicas')} release={release}"
    if kind == "jobs" and spec:
        return f"image={spec['template']['spec']['containers'][0]['image']}"
    if kind == "events" and body is not None:
        return f"{body['involvedObject']['name']} {body['type']} {body['reason']}"
    return ""


def cluster_kube(api: FakeCluster, kubeconfig: Path, outage_tolerance: float = 60.0) -> Kube:
    """A client of ``api`` on the real clock."""
    if not kubeconfig.exists():
        kubeconfig.write_text(KUBECONFIG)
    return Kube(
        Target(str(kubeconfig)),
        timeout=10,
        outage_tolerance=outage_tolerance,
        transport=httpx.MockTransport(api),
    )
