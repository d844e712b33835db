"""Kubernetes objects for the blue-green model, rendered from the app's templates.

Two Deployments, ``<app>-blue`` and ``<app>-green``, told apart by the ``bascule.io/color``
label; an active Service ``<app>`` and a preview Service ``<app>-preview``, each selecting one
color. Everything here is a pure function on plain data (only ``load_templates`` reads files),
so the rest of Bascule can decide what to apply without a cluster.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from bascule.config import EnvironmentConfig
from bascule.yamlsource import (
    ConfigError,
    Problem,
    YamlDocument,
    format_path,
    load_yaml_file,
    parse_yaml,
)

__all__ = [
    "ANNOTATION_IMAGE",
    "ANNOTATION_RELEASE",
    "COLORS",
    "LABEL_COLOR",
    "LABEL_ENVIRONMENT",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_RELEASE",
    "LABEL_ROLE",
    "MANAGED_BY",
    "ROLES",
    "Color",
    "Role",
    "Templates",
    "color_of_selector",
    "deployment_name",
    "idle_color",
    "load_templates",
    "owned_labels",
    "parse_templates",
    "render_deployment",
    "render_service",
    "selector",
    "selector_patch",
    "service_name",
    "service_proxy_path",
    "validate_release_id",
]

Color = Literal["blue", "green"]
Role = Literal["active", "preview"]
COLORS: tuple[Color, ...] = get_args(Color)
ROLES: tuple[Role, ...] = get_args(Role)

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COLOR = "bascule.io/color"
LABEL_RELEASE = "bascule.io/release"
LABEL_ROLE = "bascule.io/role"
LABEL_ENVIRONMENT = "bascule.io/environment"
ANNOTATION_RELEASE = "bascule.io/release"
ANNOTATION_IMAGE = "bascule.io/image"
MANAGED_BY = "bascule"

DEPLOYMENT_TEMPLATE = "deployment.yaml"
SERVICE_TEMPLATE = "service.yaml"

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


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


def owned_labels(app: str, environment: str | None = None) -> dict[str, str]:
    """The labels on every object Bascule creates for an app (in an environment)."""
    labels = {LABEL_NAME: app, LABEL_MANAGED_BY: MANAGED_BY}
    return labels | {LABEL_ENVIRONMENT: environment} if environment else labels


def selector(app: str, color: Color) -> dict[str, str]:
    """The labels that pick one color's pods: the Deployment's selector and a Service's."""
    return {LABEL_NAME: app, LABEL_COLOR: color}


def color_of_selector(app: str, service_selector: Mapping[str, str] | None) -> Color | None:
    """The color a Service's selector points at, or None if it is not one of ours."""
    if not service_selector or service_selector.get(LABEL_NAME) != app:
        return None
    color = service_selector.get(LABEL_COLOR)
    return color if color in COLORS else None


def selector_patch(app: str, color: Color, resource_version: str) -> dict[str, Any]:
    """A Service patch pointing it at ``color``; it only applies if the Service is unchanged
    since ``resource_version`` was read (the API server answers 409 Conflict otherwise)."""
    return {
        "metadata": {"resourceVersion": resource_version},
        "spec": {"selector": selector(app, color)},
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


def load_templates(directory: str | Path) -> Templates:
    """Read ``deployment.yaml`` and ``service.yaml`` from ``directory``; ConfigError if unusable."""
    base = Path(directory)
    problems: list[Problem] = []
    docs: list[YamlDocument] = []
    for name in (DEPLOYMENT_TEMPLATE, SERVICE_TEMPLATE):
        try:
            docs.append(load_yaml_file(base / name))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return _checked(docs[0], docs[1])


def parse_templates(
    deployment_text: str,
    service_text: str,
    *,
    deployment_file: str = DEPLOYMENT_TEMPLATE,
    service_file: str = SERVICE_TEMPLATE,
) -> Templates:
    """Templates from YAML text; the file names are only used in messages."""
    return _checked(
        parse_yaml(deployment_text, deployment_file), parse_yaml(service_text, service_file)
    )


def _checked(deployment: YamlDocument, service: YamlDocument) -> Templates:
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
) -> dict[str, Any]:
    """The Deployment for one color running one release.

    ``replicas`` defaults to the environment's; 0 renders the scaled-down form. Extra labels and
    annotations go on the Deployment and its pod template both; they may not touch Bascule's.
    """
    validate_release_id(release_id)
    if replicas is not None and replicas < 0:
        raise ValueError(f"replicas must be 0 or more, not {replicas}")
    obj: dict[str, Any] = copy.deepcopy(dict(templates.deployment))
    labels = _merge_labels(
        {**owned_labels(cfg.app, cfg.environment), **selector(cfg.app, color)},
        extra_labels,
        "labels",
    )
    annotations = _merge_labels(
        {ANNOTATION_RELEASE: release_id, ANNOTATION_IMAGE: image}, extra_annotations, "annotations"
    )
    pod_labels = {**selector(cfg.app, color), LABEL_RELEASE: release_id}

    meta = obj.setdefault("metadata", {})
    meta["name"] = deployment_name(cfg.app, color)
    meta["namespace"] = cfg.namespace
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}

    spec = obj["spec"]
    spec["replicas"] = cfg.replicas if replicas is None else replicas
    spec["selector"] = {"matchLabels": selector(cfg.app, color)}
    spec["progressDeadlineSeconds"] = cfg.rollout.progress_deadline_seconds

    pod_meta = spec["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **(extra_labels or {}), **pod_labels}
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **annotations}

    container = spec["template"]["spec"]["containers"][0]
    container["image"] = image
    container["env"] = _merged_env(container.get("env") or [], cfg.env)
    if not container["env"]:
        del container["env"]
    return obj


def _merged_env(template_env: list[dict[str, Any]], env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The template's env with the environment's values replacing same-named entries in place."""
    merged = [
        {"name": item["name"], "value": env[item["name"]]} if item.get("name") in env else item
        for item in template_env
    ]
    present = {item.get("name") for item in template_env}
    merged += [{"name": name, "value": value} for name, value in env.items() if name not in present]
    return merged


def render_service(
    cfg: EnvironmentConfig, templates: Templates, *, role: Role, color: Color
) -> dict[str, Any]:
    """The active (``<app>``) or preview (``<app>-preview``) Service, selecting ``color``."""
    obj: dict[str, Any] = copy.deepcopy(dict(templates.service))
    meta = obj.setdefault("metadata", {})
    meta["name"] = service_name(cfg.app, role)
    meta["namespace"] = cfg.namespace
    meta["labels"] = {
        **(meta.get("labels") or {}),
        **owned_labels(cfg.app, cfg.environment),
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
    port = templates.service["spec"]["ports"][0]
    port_ref = port.get("name") or port.get("port")
    name = service_name(cfg.app, role)
    return f"/api/v1/namespaces/{cfg.namespace}/services/{name}:{port_ref}/proxy/{path.lstrip('/')}"
