"""Kubernetes objects for the blue-green model, rendered from the app's templates.

Two Deployments, ``<app>-blue`` and ``<app>-green``, told apart by the ``bascule.io/color``
label; an active Service ``<app>`` and a preview Service ``<app>-preview``, each selecting one
color. Everything here is a pure function on plain data (``bascule.config_files`` reads the
template files), so the rest of Bascule can decide what to apply without a cluster.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from bascule.images import ImageError, parse_image
from bascule.vocabulary import COLORS, Color
from bascule.yamlsource import ConfigError, Problem, YamlDocument, format_path, parse_yaml

if TYPE_CHECKING:  # the loader that reads the templates imports this module
    from bascule.config.environment import EnvironmentConfig

__all__ = [
    "ANNOTATION_IMAGE",
    "ANNOTATION_RELEASE",
    "LABEL_COLOR",
    "LABEL_ENVIRONMENT",
    "LABEL_INSTANCE",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_RELEASE",
    "LABEL_ROLE",
    "LABEL_SECRETS",
    "LABEL_VERSION",
    "MANAGED_BY",
    "RESTRICTED_CONTAINER",
    "ROLES",
    "ReleaseSecret",
    "Role",
    "Templates",
    "app_container",
    "applied_image",
    "checked_templates",
    "color_of_selector",
    "deployment_name",
    "history_name",
    "idle_color",
    "instance_label",
    "label_value",
    "lease_name",
    "object_labels",
    "owned_labels",
    "parse_templates",
    "recolored",
    "release_secret",
    "render_deployment",
    "render_secret",
    "render_service",
    "restored_service",
    "restricted_context",
    "secret_refs",
    "selector",
    "selector_patch",
    "service_name",
    "service_patch",
    "service_proxy_name",
    "service_proxy_path",
    "stale_secrets",
    "validate_release_id",
    "version_label",
]

Role = Literal["active", "preview"]
ROLES: tuple[Role, ...] = get_args(Role)

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COLOR = "bascule.io/color"
LABEL_RELEASE = "bascule.io/release"
LABEL_ROLE = "bascule.io/role"
LABEL_ENVIRONMENT = "bascule.io/environment"
LABEL_SECRETS = "bascule.io/release-secrets"  # on the Secrets a release's pods read
ANNOTATION_RELEASE = "bascule.io/release"
ANNOTATION_IMAGE = "bascule.io/image"
# On a color a rollback is about to send traffic back to: the rollback's release id.
ANNOTATION_CLAIMED = "bascule.io/claimed-by"
MANAGED_BY = "bascule"

DEPLOYMENT_TEMPLATE = "deployment.yaml"
SERVICE_TEMPLATE = "service.yaml"

# What Pod Security `restricted` asks of each container (app namespaces enforce it): the
# security context of every pod Bascule makes (smoke and migration Jobs, the flow Jobs of
# bascule.workpool), and of the sample app's template.
RESTRICTED_CONTAINER: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_context() -> dict[str, Any]:
    """A container's security context that Pod Security `restricted` admits (a copy)."""
    return copy.deepcopy(dict(RESTRICTED_CONTAINER))


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_MAX = 63
# Hex digits of the hash a label value made from other text ends with (``label_value``).
LABEL_HASH_LENGTH = 10
# Hex digits of a digest that name an image without a tag (``version_label``), as `docker
# images` shortens ids.
SHORT_DIGEST = 12


# --- names and selectors ------------------------------------------------------------------------


def idle_color(active: Color | None) -> Color:
    """The color to deploy next: the one not serving. Before any deploy, blue."""
    if active is None:
        return "blue"
    return "green" if active == "blue" else "blue"


def deployment_name(app: str, color: Color) -> str:
    return f"{app}-{color}"


def service_name(app: str, role: Role) -> str:
    return app if role == "active" else f"{app}-preview"


def history_name(app: str) -> str:
    """The ConfigMap holding the app's release history."""
    return f"{app}-bascule-history"


def lease_name(app: str) -> str:
    """The Lease that is the app's deploy lock."""
    return f"{app}-bascule-deploy"


def service_host(app: str, role: Role, namespace: str) -> str:
    """The Service's name as pods resolve it through the cluster DNS, on any cluster domain
    (the pods' search list completes ``<svc>.<ns>.svc``)."""
    return f"{service_name(app, role)}.{namespace}.svc"


def owned_labels(app: str, environment: str | None = None) -> dict[str, str]:
    """The labels that tell an app's objects (in an environment) from any other's: what
    Bascule lists its objects by. ``object_labels`` adds those that describe them."""
    labels = {LABEL_NAME: app, LABEL_MANAGED_BY: MANAGED_BY}
    return labels | {LABEL_ENVIRONMENT: environment} if environment else labels


def object_labels(app: str, environment: str, image: str | None = None) -> dict[str, str]:
    """The labels on every object Bascule creates for an app in an environment: its own
    (``owned_labels``) and Kubernetes' recommended ``app.kubernetes.io`` ones, name,
    instance (``instance_label``), managed-by and, on what belongs to one release (its
    Deployment and pods, Secret, stored objects, Jobs), version (``version_label`` of its
    image). Never a selector: the version changes with each release, and objects made
    before these labels existed lack the instance."""
    labels = {**owned_labels(app, environment), LABEL_INSTANCE: instance_label(app, environment)}
    version = version_label(image) if image else None
    return labels | {LABEL_VERSION: version} if version else labels


def label_value(text: str) -> str:
    """``text`` as a label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends):
    itself when it is one; otherwise what it has of those, cut to fit, then a hash of the
    whole text, so that two texts never share a value by losing what told them apart."""
    if _LABEL_VALUE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:LABEL_HASH_LENGTH]
    kept = re.sub(r"[^-A-Za-z0-9_.]+", "-", text).strip("-_.")
    head = kept[: LABEL_VALUE_MAX - LABEL_HASH_LENGTH - 1].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


def instance_label(app: str, environment: str) -> str:
    """``app.kubernetes.io/instance``: one app in one environment, ``<app>-<environment>``
    (two environments may share a namespace, and tools group by instance)."""
    return label_value(f"{app}-{environment}")


def version_label(image: str) -> str | None:
    """``app.kubernetes.io/version`` of a release's image: its tag, or without one the
    short form of its digest (``sha256-<12 hex>``); a label value either way. None for a
    reference with neither."""
    try:
        ref = parse_image(image, pinned=False)
    except ImageError:
        return None  # never deployed: each release's image was checked when it was planned
    if ref.tag:
        return label_value(ref.tag)
    if ref.digest:
        algorithm, _, hex_digits = ref.digest.partition(":")
        return f"{algorithm}-{hex_digits[:SHORT_DIGEST]}"
    return None


def selector(app: str, color: Color) -> dict[str, str]:
    """The labels that pick one color's pods: the Deployment's selector and a Service's."""
    return {LABEL_NAME: app, LABEL_COLOR: color}


def color_of_selector(app: str, service_selector: Mapping[str, str] | None) -> Color | None:
    """The color a Service's selector points at, or None if it is not one of ours."""
    if not service_selector or service_selector.get(LABEL_NAME) != app:
        return None
    color = service_selector.get(LABEL_COLOR)
    return color if color in COLORS else None


def selector_patch(
    app: str, color: Color, resource_version: str, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Service patch pointing it at ``color``, setting ``labels`` (``object_labels`` of
    the release that color runs: a Service's version follows what it selects); it only
    applies if the Service is unchanged since ``resource_version`` was read (the API server
    answers 409 Conflict otherwise)."""
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if labels:
        meta["labels"] = dict(labels)
    return {"metadata": meta, "spec": {"selector": selector(app, color)}}


def service_patch(rendered: Mapping[str, Any], resource_version: str) -> dict[str, Any]:
    """A merge patch bringing a Service to ``rendered`` (``render_service``: its labels and
    spec, the selector included), guarded like ``selector_patch``. The ports list is
    replaced whole; fields the API server set (clusterIP) are kept."""
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "labels": dict(rendered["metadata"]["labels"]),
        },
        "spec": copy.deepcopy(dict(rendered["spec"])),
    }


def validate_release_id(release_id: str) -> str:
    """A release id is stored as a label value: at most 63 of [A-Za-z0-9-_.], alphanumeric ends."""
    if not _LABEL_VALUE.fullmatch(release_id):
        raise ValueError(
            f"release id {release_id!r} is not a valid label value: use at most 63 letters, "
            "digits, '-', '_' or '.', beginning and ending with a letter or digit"
        )
    return release_id


# --- templates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    """The app's Deployment and Service templates as plain data (never mutated)."""

    deployment: Mapping[str, Any]
    service: Mapping[str, Any]


def parse_templates(
    deployment_text: str,
    service_text: str,
    *,
    deployment_file: str = DEPLOYMENT_TEMPLATE,
    service_file: str = SERVICE_TEMPLATE,
) -> Templates:
    """Templates from YAML text; the file names are only used in messages."""
    return checked_templates(
        parse_yaml(deployment_text, deployment_file), parse_yaml(service_text, service_file)
    )


def checked_templates(deployment: YamlDocument, service: YamlDocument) -> Templates:
    """The templates of two parsed documents; ConfigError, listing each problem, if unusable."""
    problems = _shape_problems(deployment, "apps/v1", "Deployment", ("spec", "template", "spec"))
    problems += _shape_problems(service, "v1", "Service", ("spec",))
    if not problems:
        containers = deployment.data["spec"]["template"]["spec"].get("containers")
        loc: tuple[str | int, ...] = ("spec", "template", "spec", "containers")
        if not isinstance(containers, list) or not containers:
            problems.append(
                _problem(deployment, loc, "needs at least one container — add the app's")
            )
        elif not isinstance(containers[0], dict) or not isinstance(containers[0].get("name"), str):
            problems.append(_problem(deployment, (*loc, 0), "the app container needs a `name`"))
        ports = service.data["spec"].get("ports")
        if not isinstance(ports, list) or not ports or not isinstance(ports[0], dict):
            problems.append(
                _problem(service, ("spec", "ports"), "needs at least one port — add one")
            )
    if problems:
        raise ConfigError(problems)
    return Templates(deployment=deployment.data, service=service.data)


def _problem(doc: YamlDocument, loc: tuple[str | int, ...], message: str) -> Problem:
    return Problem(doc.file, message, doc.mark_of(loc), format_path(loc))


def _shape_problems(
    doc: YamlDocument, api_version: str, kind: str, required: tuple[str, ...]
) -> list[Problem]:
    data = doc.data
    if not isinstance(data, dict):
        return [_problem(doc, (), f"expected one {kind} object (a mapping) — see the example")]
    problems = [
        _problem(doc, (key,), f"must be {want!r} — this template is the app's {kind}")
        for key, want in (("apiVersion", api_version), ("kind", kind))
        if data.get(key) != want
    ]
    node: Any = data
    for depth, key in enumerate(required):
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            problems.append(
                _problem(doc, required[: depth + 1], "missing or not a mapping — add it")
            )
            break
    return problems


# --- rendering ----------------------------------------------------------------------------------


def _merge_labels(
    own: Mapping[str, str], extra: Mapping[str, str] | None, what: str
) -> dict[str, str]:
    clash = sorted(set(own) & set(extra or {}))
    if clash:
        raise ValueError(f"extra {what} may not set {', '.join(clash)}: Bascule owns them")
    return {**(extra or {}), **own}


def render_deployment(
    cfg: EnvironmentConfig,
    templates: Templates,
    *,
    color: Color,
    image: str,
    release_id: str,
    replicas: int | None = None,
    extra_labels: Mapping[str, str] | None = None,
    extra_annotations: Mapping[str, str] | None = None,
    secret: ReleaseSecret | None = None,
) -> dict[str, Any]:
    """The Deployment for one color running one release.

    ``replicas`` defaults to the environment's; 0 renders the scaled-down form. Extra labels and
    annotations go on the Deployment and its pod template both; they may not touch Bascule's.
    ``secret``: the release's Secret, whose keys become the container's secret variables.
    The image, ``env`` and ``secret`` go to the app's container (``workload.container``, by
    default the first); the others keep theirs.
    """
    if replicas is not None and replicas < 0:
        raise ValueError(f"replicas must be 0 or more, not {replicas}")
    obj: dict[str, Any] = copy.deepcopy(dict(templates.deployment))
    _identify(obj, cfg, color, release_id, image, extra_labels, extra_annotations)
    spec = obj["spec"]
    spec["replicas"] = cfg.replicas if replicas is None else replicas
    spec["progressDeadlineSeconds"] = cfg.rollout.progress_deadline_seconds

    container = app_container(spec["template"]["spec"], cfg.workload.container)
    container["image"] = image
    entries: dict[str, dict[str, Any]] = {
        name: {"name": name, "value": value} for name, value in cfg.env.items()
    }
    if secret is not None:
        for key in secret.keys:
            ref = {"name": secret.name, "key": key}
            entries[key] = {"name": key, "valueFrom": {"secretKeyRef": ref}}
    container["env"] = _merged_env(container.get("env") or [], entries)
    if not container["env"]:
        del container["env"]
    return obj


def recolored(
    deployment: Mapping[str, Any], cfg: EnvironmentConfig, *, color: Color, release_id: str
) -> dict[str, Any]:
    """A Deployment a release applied (``bascule.snapshots``), as ``color`` running release
    ``release_id``: its name, namespace, color, selector and release id are this
    environment's and this run's; everything else (image, replicas, env, Secret reference)
    stays as the release applied it."""
    obj: dict[str, Any] = copy.deepcopy(dict(deployment))
    _identify(obj, cfg, color, release_id, applied_image(obj))
    return obj


def app_container(pod_spec: Mapping[str, Any], name: str | None) -> dict[str, Any]:
    """The container of a pod template that runs the deployed image: the one named ``name``
    (``workload.container``), or the first. KeyError if none has that name (the
    classification of the manifests, ``bascule.workload``, refuses such a template first)."""
    containers: list[dict[str, Any]] = pod_spec["containers"]
    if name is None:
        return containers[0]
    for container in containers:
        if container.get("name") == name:
            return container
    raise KeyError(f"no container named {name!r}")


def applied_image(deployment: Mapping[str, Any]) -> str:
    """The image a rendered Deployment deploys: its release annotation, which names it
    whichever container runs it (else, for one rendered before it was set, the first's)."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    if ANNOTATION_IMAGE in annotations:
        return str(annotations[ANNOTATION_IMAGE])
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _identify(
    obj: dict[str, Any],
    cfg: EnvironmentConfig,
    color: Color,
    release_id: str,
    image: str,
    extra_labels: Mapping[str, str] | None = None,
    extra_annotations: Mapping[str, str] | None = None,
) -> None:
    """Sets what makes a Deployment ``color``'s running release ``release_id`` of ``image``:
    its name and namespace, Bascule's labels, the selector, the pod template's labels and
    the release annotations (replacing those it had)."""
    validate_release_id(release_id)
    labels = _merge_labels(
        {**object_labels(cfg.app, cfg.environment, image), **selector(cfg.app, color)},
        extra_labels,
        "labels",
    )
    annotations = _merge_labels(
        {ANNOTATION_RELEASE: release_id, ANNOTATION_IMAGE: image}, extra_annotations, "annotations"
    )
    # The selector's labels are the Deployment's own: only the pods' other labels may change.
    pod_labels = {**labels, LABEL_RELEASE: release_id}

    meta = obj.setdefault("metadata", {})
    meta["name"] = deployment_name(cfg.app, color)
    meta["namespace"] = cfg.namespace
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}

    spec = obj["spec"]
    spec["selector"] = {"matchLabels": selector(cfg.app, color)}
    pod_meta = spec["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **pod_labels}
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **annotations}


def _merged_env(
    template_env: list[dict[str, Any]], entries: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The template's env with the environment's entries replacing same-named ones in place."""
    merged = [entries.get(item.get("name", ""), item) for item in template_env]
    present = {item.get("name") for item in template_env}
    merged += [entry for name, entry in entries.items() if name not in present]
    return merged


# --- the release's Secret -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseSecret:
    """The Secret holding one release's secret variables: its name and keys, no values."""

    name: str
    keys: tuple[str, ...]


# Hex digits of the content hash in a Secret's name: a new name whenever a value changes.
SECRET_HASH_LENGTH = 10


def release_secret(app: str, values: Mapping[str, str]) -> ReleaseSecret | None:
    """Names the Secret for ``values`` (variable → value): ``<app>-secrets-<hash>``, the hash
    of the app and the values, so equal values share one Secret and changed ones get a new
    one. None when there are no values."""
    if not values:
        return None
    content = json.dumps([app, sorted(values.items())], ensure_ascii=False).encode()
    digest = hashlib.sha256(content).hexdigest()[:SECRET_HASH_LENGTH]
    return ReleaseSecret(f"{app}-secrets-{digest}", tuple(sorted(values)))


def render_secret(cfg: EnvironmentConfig, values: Mapping[str, str]) -> dict[str, Any]:
    """The immutable Secret of ``values``: written once, never changed, only deleted once no
    release in the history uses it."""
    secret = release_secret(cfg.app, values)
    if secret is None:
        raise ValueError("a release Secret needs at least one value")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": secret.name,
            "namespace": cfg.namespace,
            # No version: releases with the same values share it.
            "labels": {**object_labels(cfg.app, cfg.environment), LABEL_SECRETS: "true"},
        },
        "data": {k: base64.b64encode(values[k].encode()).decode() for k in secret.keys},
    }


def secret_refs(deployment: Mapping[str, Any] | None) -> set[str]:
    """Names of the Secrets a Deployment's containers read through secretKeyRef or envFrom."""
    names: set[str] = set()
    spec = ((deployment or {}).get("spec") or {}).get("template", {}).get("spec", {})
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                names.add(ref["name"])
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") or {}
            if ref.get("name"):
                names.add(ref["name"])
    return names


def stale_secrets(existing: Iterable[str], in_use: Iterable[str]) -> list[str]:
    """The release Secrets to delete: those no kept release and no Deployment uses."""
    return sorted(set(existing) - set(in_use))


def render_service(
    cfg: EnvironmentConfig,
    templates: Templates,
    *,
    role: Role,
    color: Color,
    image: str | None = None,
) -> dict[str, Any]:
    """The active (``<app>``) or preview (``<app>-preview``) Service, selecting ``color``,
    which runs ``image`` (its version label; the selector patch keeps it current)."""
    return restored_service(templates.service, cfg, role=role, color=color, image=image)


def restored_service(
    service: Mapping[str, Any],
    cfg: EnvironmentConfig,
    *,
    role: Role,
    color: Color,
    image: str | None = None,
) -> dict[str, Any]:
    """``service`` (the template, or a Service a release applied, ``bascule.snapshots``) as
    the ``role`` Service selecting ``color``, which runs ``image``: the roles differ only in
    name, role label and selector; its ports and the rest stay as they are."""
    obj: dict[str, Any] = copy.deepcopy(dict(service))
    meta = obj.setdefault("metadata", {})
    meta["name"] = service_name(cfg.app, role)
    meta["namespace"] = cfg.namespace
    meta["labels"] = {
        **(meta.get("labels") or {}),
        **object_labels(cfg.app, cfg.environment, image),
        LABEL_ROLE: role,
    }
    obj["spec"]["selector"] = selector(cfg.app, color)
    return obj


def service_proxy_path(
    cfg: EnvironmentConfig, templates: Templates, *, role: Role, path: str
) -> str:
    """The Kubernetes API path that proxies ``path`` to the Service's first port.

    Checks use it by default, so nothing but the kubeconfig is needed to reach the app.
    """
    name = service_proxy_name(cfg.app, templates, role)
    return f"/api/v1/namespaces/{cfg.namespace}/services/{name}/proxy/{path.lstrip('/')}"


def service_proxy_name(app: str, templates: Templates, role: Role) -> str:
    """``<service>:<port>``, the Service and its first port as a proxy request names them:
    the name RBAC authorizes the request by (a Role's ``resourceNames``)."""
    port = templates.service["spec"]["ports"][0]
    return f"{service_name(app, role)}:{port.get('name') or port.get('port')}"
