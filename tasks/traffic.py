"""Where traffic goes: the active and preview Services, and the switch between colors."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from bascule import kube as k
from bascule.errors import OperationFailed
from bascule.kube import KubeError
from bascule.manifests import (
    Role,
    color_of_selector,
    object_labels,
    restored_service,
    selector,
    selector_patch,
    service_patch,
)
from bascule.tasks.context import Env
from bascule.vocabulary import Color


class SwitchConflict(OperationFailed):
    """The active Service changed under us: someone else moved traffic."""


def _ensure(
    env: Env,
    role: Role,
    color: Color,
    image: str | None,
    service: Mapping[str, Any] | None = None,
) -> None:
    """The Service of ``role`` exists and selects ``color``, which runs ``image``;
    ``service`` (the template or a release's stored Service): and is that Service as
    ``role`` (``restored_service``: its ports and the rest), applied even when it selects
    ``color``. A missing one is made from ``service``, else from the template."""
    path = env.service(role)
    svc = env.kube.get_or_none(path)
    source = env.templates.service if service is None else service
    obj = restored_service(source, env.cfg, role=role, color=color, image=image)
    if svc is None:
        try:
            svc = env.kube.create(k.services(env.ns), obj)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
            svc = env.kube.get(path)
    version = svc["metadata"]["resourceVersion"]
    if service is not None:
        env.kube.patch(path, service_patch(obj, version))
        return
    # A Service made before a label was, or that selected another release, gets them now.
    labels = object_labels(env.app, env.name, image)
    current = svc["metadata"].get("labels") or {}
    if color_of_selector(env.app, svc["spec"].get("selector")) != color or not (
        labels.items() <= current.items()
    ):
        env.kube.patch(path, selector_patch(env.app, color, version, labels))


@task(name="point-preview", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=1)
def point_preview(env: Env, color: Color, image: str | None = None) -> None:
    """The preview Service as rendered, selecting ``color`` (which runs ``image``): every
    deploy applies its ports (a rollback redeploying stored objects: the stored Service's,
    which ``env.templates`` holds then)."""
    env.kube.retrying(lambda: _ensure(env, "preview", color, image, env.templates.service))


# A 409 on the guarded PATCH means the Service changed after our read: read and try again,
# this many times at most.
CONFLICT_TRIES = 5


@task(name="switch", cache_policy=NO_CACHE)
def switch(
    env: Env,
    to: Color,
    expect_from: Color | None,
    image: str | None = None,
    service: Mapping[str, Any] | None = None,
) -> float:
    """Points the active Service at ``to`` (which runs ``image``: the Service's version
    label) with one PATCH guarded by resourceVersion: it only lands if the Service still
    selects ``expect_from``. Returns seconds until the Service's endpoints list only
    ``to``'s pods (kube-proxy then routes new connections there). ``service``: the Service
    of ``to``'s release (a deploy's: the template; a rollback's: the one that release
    stored), to which the same PATCH brings the active one (``restored_service``: ports and
    the rest, which ``to``'s pods serve); None: only the selector and labels move.

    Through an API outage the PATCH is never repeated blindly, since its answer may have
    been lost after it landed: the Service is read again first, and a Service already on
    ``to`` means done."""
    started = time.monotonic()
    env.kube.retrying(lambda: _point_active(env, to, expect_from, image, service))
    wait_endpoints(env, to, timeout=30)
    return time.monotonic() - started


def _point_active(
    env: Env,
    to: Color,
    expect_from: Color | None,
    image: str | None,
    service: Mapping[str, Any] | None,
) -> None:
    path = env.service("active")
    for _ in range(CONFLICT_TRIES):
        svc = env.kube.get_or_none(path)
        if svc is None:
            if expect_from is not None:
                raise SwitchConflict(
                    f"the active Service {path} disappeared; expected {expect_from}"
                )
            _ensure(env, "active", to, image, service)
            return
        current = color_of_selector(env.app, svc["spec"].get("selector"))
        if current == to:
            return  # nothing to do, or a PATCH of ours whose answer was lost did land
        if current != expect_from:
            raise SwitchConflict(
                f"the active Service selects {current}, expected {expect_from}: someone else "
                "moved traffic; nothing was changed"
            )
        version = svc["metadata"]["resourceVersion"]
        patch = selector_patch(env.app, to, version, object_labels(env.app, env.name, image))
        if service is not None:
            obj = restored_service(service, env.cfg, role="active", color=to, image=image)
            patch = service_patch(obj, version)
        try:
            env.kube.patch(path, patch)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Changed since our read: by someone else, or by a PATCH of ours that the API
            # held through an outage and applied late. The next read tells which.
    raise SwitchConflict(f"the active Service {path} kept changing while switching to {to}")


def wait_endpoints(env: Env, color: Color, timeout: float) -> None:
    """Until the active Service's EndpointSlices hold ready endpoints of ``color`` only;
    between looks it watches the slices instead of polling them."""
    service = env.service("active").rsplit("/", 1)[1]
    slices_path = f"/apis/discovery.k8s.io/v1/namespaces/{env.ns}/endpointslices"
    by_service = f"kubernetes.io/service-name={service}"
    deadline = env.kube.active_time() + timeout
    ours = _pod_names(env, color)
    while True:
        listing = env.kube.get(slices_path, labelSelector=by_service)
        names = {
            ep["targetRef"]["name"]
            for s in listing.get("items", [])
            for ep in s.get("endpoints") or []
            if ep.get("conditions", {}).get("ready") and ep.get("targetRef")
        }
        if names and not names <= ours:
            ours = _pod_names(env, color)  # a pod of the color may have been replaced
        if names and names <= ours:
            return
        remaining = deadline - env.kube.active_time()
        if remaining <= 0:
            raise TimeoutError(
                f"the active Service's endpoints did not move to {color} in {timeout} s"
            )
        env.kube.wait_for_change(
            slices_path,
            listing["metadata"]["resourceVersion"],
            remaining,
            labelSelector=by_service,
        )


def _pod_names(env: Env, color: Color) -> set[str]:
    pods = env.kube.get(k.pods(env.ns), labelSelector=k.selector_string(selector(env.app, color)))
    return {p["metadata"]["name"] for p in pods["items"]}
