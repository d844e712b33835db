"""The app's rendered objects sorted by how Bascule runs them blue-green, and each rendered
for a color, a release or once.

- the workload: the one Deployment (``workload.deployment`` when there are several),
  rendered per color (``bascule.manifests.render_deployment``);
- its Service: rendered as the active and the preview Service;
- per color: the HorizontalPodAutoscaler aimed at the workload and the PodDisruptionBudget
  selecting its pods, one of each per color aimed at that color's Deployment and pods;
- per release, immutable: the ConfigMaps the pod template reads (volumes, envFrom, env),
  renamed ``<name>-<hash of the content>`` with the references rewritten, like the release
  Secrets, so a rollback returns to the files its release ran with;
- once, shared: the kinds of ``SHARED`` (Ingress, NetworkPolicy, monitors, ...);
- refused, naming the object's origin and why: everything else (unknown kinds included).

Pure: no I/O.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bascule.manifests import (
    LABEL_COLOR,
    ReleaseSecret,
    Templates,
    deployment_name,
    owned_labels,
    render_deployment,
    selector,
    service_name,
)
from bascule.rendered import RenderedObject
from bascule.vocabulary import Color
from bascule.yamlsource import ConfigError, Mark, Problem

if TYPE_CHECKING:
    from bascule.config.environment import EnvironmentConfig
    from bascule.config.workload import WorkloadConfig

Handling = Literal["workload", "service", "per color", "per release", "shared"]
# On the per-release ConfigMaps, to find them for pruning.
LABEL_RELEASE_CONFIG = "bascule.io/release-config"
# Hex digits of the content hash in a per-release ConfigMap's name.
CONFIG_HASH_LENGTH = 10


@dataclass(frozen=True)
class Kind:
    """Where the API serves a kind: its group ("" for the core group) and plural."""

    group: str
    plural: str


# Every kind Bascule manages, by the handling it gets.
WORKLOAD_KINDS: Mapping[str, Kind] = {
    "Deployment": Kind("apps", "deployments"),
    "Service": Kind("", "services"),
}
PER_COLOR: Mapping[str, Kind] = {
    "HorizontalPodAutoscaler": Kind("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Kind("policy", "poddisruptionbudgets"),
}
# Applied once and shared by both colors: they name the app's Services or all its pods,
# never one color's. ConfigMaps the pods read are per release instead.
SHARED: Mapping[str, Kind] = {
    "ConfigMap": Kind("", "configmaps"),
    "Ingress": Kind("networking.k8s.io", "ingresses"),
    "NetworkPolicy": Kind("networking.k8s.io", "networkpolicies"),
    "ServiceAccount": Kind("", "serviceaccounts"),
    "ServiceMonitor": Kind("monitoring.coreos.com", "servicemonitors"),
    "PodMonitor": Kind("monitoring.coreos.com", "podmonitors"),
}
KINDS: Mapping[str, Kind] = {**WORKLOAD_KINDS, **PER_COLOR, **SHARED}

# Why the kinds people most often bring cannot run blue-green, and what to do instead.
_APART = "deploy it apart from this app's blue-green manifests"
REFUSED: Mapping[str, str] = {
    "StatefulSet": f"its pods keep identities and volumes two colors cannot share — {_APART}",
    "DaemonSet": f"it runs one pod per node, not two colors side by side — {_APART}",
    "ReplicaSet": "Bascule makes the ReplicaSets from the Deployment — remove it",
    "Pod": "Bascule makes the pods from the Deployment — remove it",
    "Job": "it would run at every apply, not once per release — use `migrations:` or "
    "checks.smoke.job",
    "CronJob": f"its runs would belong to neither color — {_APART}",
    "Secret": "secret values do not belong in manifests — use `secrets:`, which versions "
    "them per release",
}
# Cluster-scoped kinds: outside the app's namespace, which is all a run's Roles reach.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
)


@dataclass(frozen=True)
class Workload:
    """The app's rendered objects, sorted (``classify``)."""

    deployment: RenderedObject
    service: RenderedObject
    autoscaler: RenderedObject | None = None
    disruption_budget: RenderedObject | None = None
    config_maps: tuple[RenderedObject, ...] = ()  # per release
    shared: tuple[RenderedObject, ...] = ()

    @property
    def templates(self) -> Templates:
        return Templates(self.deployment.data, self.service.data)

    @property
    def per_color(self) -> tuple[RenderedObject, ...]:
        return tuple(o for o in (self.autoscaler, self.disruption_budget) if o is not None)

    def managed(self) -> Iterator[tuple[RenderedObject, Handling]]:
        """Every object and how it is handled, in the order a report lists them."""
        yield self.deployment, "workload"
        yield self.service, "service"
        yield from ((o, "per color") for o in self.per_color)
        yield from ((o, "per release") for o in self.config_maps)
        yield from ((o, "shared") for o in self.shared)


def from_templates(templates: Templates, directory: str = "manifests") -> list[RenderedObject]:
    """Today's two templates as rendered objects (until every manifest source renders)."""
    return [
        RenderedObject(templates.deployment, f"{directory}/deployment.yaml:1"),
        RenderedObject(templates.service, f"{directory}/service.yaml:1"),
    ]


def problem_at(origin: str, message: str, field: str = "") -> Problem:
    """A problem at a rendered object's origin, ``file:line`` (or a bare file)."""
    file, _, line = origin.rpartition(":")
    if file and line.isdigit():
        return Problem(file, message, Mark(int(line), 1), field)
    return Problem(origin, message, None, field)


def _name(obj: RenderedObject) -> str:
    return str((obj.data.get("metadata") or {}).get("name"))


def _kind(obj: RenderedObject) -> str:
    return str(obj.data.get("kind"))


def _group(api_version: Any) -> str:
    text = str(api_version)
    return text.rpartition("/")[0] if "/" in text else ""


def described(obj: RenderedObject) -> str:
    return f"{_kind(obj)} {_name(obj)}"


def _shape_problem(obj: RenderedObject, namespace: str | None) -> str | None:
    data = obj.data
    if not isinstance(data, Mapping):
        return "not a Kubernetes object (a mapping) — check the manifests"
    kind, meta = data.get("kind"), data.get("metadata")
    if not isinstance(kind, str) or not isinstance(data.get("apiVersion"), str):
        return "needs `apiVersion` and `kind`"
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return f"this {kind} needs `metadata.name`"
    own = meta.get("namespace")
    if namespace is not None and own not in (None, namespace):
        return (
            f"{kind} {meta['name']} is in namespace {own}, not the environment's {namespace} "
            "— remove metadata.namespace (Bascule sets it)"
        )
    known = KINDS.get(kind)
    if known is not None and _group(data["apiVersion"]) != known.group:
        group = known.group or "the core group"
        return f"{kind} {meta['name']}: apiVersion {data['apiVersion']} is not of {group}"
    return None


def _refusal(obj: RenderedObject) -> str:
    kind = _kind(obj)
    if kind in REFUSED:
        why = REFUSED[kind]
    elif kind in CLUSTER_SCOPED:
        why = (
            "it is cluster-scoped, and Bascule manages objects in the app's namespace only "
            f"— {_APART}"
        )
    else:
        why = (
            "Bascule does not know how to run this kind blue-green — remove it or "
            f"{_APART}; it manages {', '.join(sorted(KINDS))}"
        )
    return f"{described(obj)} is refused: {why}"


def _chosen(
    found: list[RenderedObject], wanted: str | None, kind: str, key: str, config_file: str
) -> tuple[RenderedObject | None, list[Problem]]:
    """The workload's object of ``kind``: the one named ``wanted`` (config ``key`` of
    ``config_file``), or the only one; problems naming each candidate otherwise."""
    if wanted is not None:
        match = [o for o in found if _name(o) == wanted]
        if match:
            return match[0], []
        names = ", ".join(sorted(_name(o) for o in found)) or "none"
        return None, [
            Problem(
                config_file,
                f"no {kind} named {wanted} among the manifests ({names}) — name one of them",
                None,
                key,
            )
        ]
    if len(found) == 1:
        return found[0], []
    if not found:
        return None, [
            Problem(
                config_file, f"no {kind} among the manifests — add the app's", None, "manifests"
            )
        ]
    names = ", ".join(sorted(_name(o) for o in found))
    return None, [
        problem_at(
            o.origin,
            f"one of {len(found)} {kind}s ({names}): name the app's in `{key}`",
        )
        for o in found
    ]


def _pod_spec(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}


def _workload_problems(
    deployment: RenderedObject, service: RenderedObject, container: str | None, config_file: str
) -> list[Problem]:
    out = []
    pod = _pod_spec(deployment.data)
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        out.append(problem_at(deployment.origin, "needs at least one container — add the app's"))
    elif not all(isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in containers):
        out.append(problem_at(deployment.origin, "each container needs a `name`"))
    elif container is not None and container not in [c["name"] for c in containers]:
        names = ", ".join(c["name"] for c in containers)
        out.append(
            Problem(
                config_file,
                f"{described(deployment)} has no container {container} ({names}) — name one "
                "of them",
                None,
                "workload.container",
            )
        )
    ports = (service.data.get("spec") or {}).get("ports")
    if not isinstance(ports, list) or not ports or not isinstance(ports[0], Mapping):
        out.append(problem_at(service.origin, "needs at least one port — add one"))
    return out


def config_refs(deployment: Mapping[str, Any] | None) -> set[str]:
    """Names of the ConfigMaps a Deployment's pods read: volumes (projected too), envFrom and
    env's configMapKeyRef."""
    return {ref["name"] for ref in _config_ref_holders(deployment or {})}


def _config_ref_holders(deployment: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Each mapping in a pod template whose ``name`` is a ConfigMap's (the object's own:
    ``with_config_names`` rewrites them in place)."""
    pod = _pod_spec(deployment)
    for volume in pod.get("volumes") or []:
        if isinstance(ref := volume.get("configMap"), dict) and ref.get("name"):
            yield ref
        for source in (volume.get("projected") or {}).get("sources") or []:
            if isinstance(ref := source.get("configMap"), dict) and ref.get("name"):
                yield ref
    for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("configMapKeyRef")
            if isinstance(ref, dict) and ref.get("name"):
                yield ref
        for source in container.get("envFrom") or []:
            if isinstance(ref := source.get("configMapRef"), dict) and ref.get("name"):
                yield ref


def _aims_at(hpa: Mapping[str, Any], deployment: str) -> bool:
    target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return bool(target.get("kind") == "Deployment" and target.get("name") == deployment)


def _selects(pdb: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    chosen = (pdb.get("spec") or {}).get("selector") or {}
    labels = chosen.get("matchLabels") or {}
    return (
        bool(labels) and not chosen.get("matchExpressions") and labels.items() <= pod_labels.items()
    )


def classify(
    objects: Sequence[RenderedObject],
    choice: WorkloadConfig,
    namespace: str | None = None,
    config_file: str = "the environment file",
) -> Workload:
    """Sorts the rendered objects by how they are run; ConfigError listing every refused or
    unusable one (by its origin) and every ambiguity of the workload's choice (`workload:`
    of ``config_file``)."""
    problems: list[Problem] = []
    usable: list[RenderedObject] = []
    seen: dict[tuple[str, str], str] = {}
    for obj in objects:
        if (shape := _shape_problem(obj, namespace)) is not None:
            problems.append(problem_at(obj.origin, shape))
            continue
        key = (_kind(obj), _name(obj))
        if key in seen:
            problems.append(
                problem_at(obj.origin, f"{described(obj)} is already defined at {seen[key]}")
            )
            continue
        seen[key] = obj.origin
        usable.append(obj)

    deployments = [o for o in usable if _kind(o) == "Deployment"]
    services = [o for o in usable if _kind(o) == "Service"]
    deployment, found = _chosen(
        deployments, choice.deployment, "Deployment", "workload.deployment", config_file
    )
    problems += found
    service, found = _chosen(services, choice.service, "Service", "workload.service", config_file)
    problems += found
    if deployment is None or service is None:
        # What it cannot run says why, too: a misspelt kind is often the missing one.
        unknown = (o for o in usable if _kind(o) not in (*KINDS, *REFUSED))
        problems += [problem_at(o.origin, _refusal(o)) for o in unknown]
        raise ConfigError(problems)
    problems += _workload_problems(deployment, service, choice.container, config_file)
    pod_labels = ((deployment.data["spec"].get("template") or {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    read = config_refs(deployment.data)

    per_color: dict[str, RenderedObject] = {}
    config_maps: list[RenderedObject] = []
    shared: list[RenderedObject] = []
    for obj in usable:
        kind = _kind(obj)
        if obj is deployment or obj is service:
            continue
        if kind == "Deployment":
            why = (
                f"a second Deployment (the workload is {_name(deployment)}): Bascule runs one "
                "Deployment blue-green — name the app's in `workload.deployment` and deploy "
                "the other apart"
            )
        elif kind == "Service":
            why = (
                f"a second Service (the workload's is {_name(service)}) would reach both "
                "colors' pods at once — name the app's in `workload.service`, remove the other"
            )
        elif kind in PER_COLOR:
            aimed = (
                _aims_at(obj.data, _name(deployment))
                if kind == "HorizontalPodAutoscaler"
                else _selects(obj.data, pod_labels)
            )
            if kind in per_color:
                why = (
                    f"a second {kind} for the workload (the first is at "
                    f"{per_color[kind].origin}): they would fight over its pods — keep one"
                )
            elif not aimed:
                target = (
                    f"scaleTargetRef is not Deployment {_name(deployment)}"
                    if kind == "HorizontalPodAutoscaler"
                    else "its selector.matchLabels do not select the workload's pods "
                    f"(the labels of {_name(deployment)}'s pod template)"
                )
                why = f"{target}: Bascule runs a {kind} only per color of the workload"
            else:
                per_color[kind] = obj
                continue
        elif kind == "ConfigMap" and _name(obj) in read:
            config_maps.append(obj)
            continue
        elif kind in SHARED:
            shared.append(obj)
            continue
        else:
            problems.append(problem_at(obj.origin, _refusal(obj)))
            continue
        problems.append(problem_at(obj.origin, f"{described(obj)} is refused: {why}"))
    if problems:
        raise ConfigError(problems)
    return Workload(
        deployment,
        service,
        per_color.get("HorizontalPodAutoscaler"),
        per_color.get("PodDisruptionBudget"),
        tuple(config_maps),
        tuple(shared),
    )


# --- how each is rendered ----------------------------------------------------------------------


def path(namespace: str, obj: Mapping[str, Any]) -> str:
    """The API path of a managed object (``KINDS``), by its apiVersion, kind and name."""
    kind = KINDS[obj["kind"]]
    base = "/api/v1" if not kind.group else f"/apis/{obj['apiVersion']}"
    return f"{base}/namespaces/{namespace}/{kind.plural}/{obj['metadata']['name']}"


def _owned(
    cfg: EnvironmentConfig, data: Mapping[str, Any], name: str, **labels: str
) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(dict(data))
    meta = obj.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = cfg.namespace
    meta["labels"] = {
        **(meta.get("labels") or {}),
        **owned_labels(cfg.app, cfg.environment),
        **labels,
    }
    return obj


def per_color_name(app: str, color: Color) -> str:
    """The name of a color's HPA and PDB: its Deployment's (they are of other kinds)."""
    return deployment_name(app, color)


# The API version a color's object of each per-color kind is deleted through.
_PER_COLOR_VERSIONS: Mapping[str, str] = {
    "HorizontalPodAutoscaler": "v2",
    "PodDisruptionBudget": "v1",
}


def stale_per_color(
    namespace: str, app: str, color: Color, kept: Iterable[Mapping[str, Any]]
) -> list[str]:
    """The API paths of ``color``'s per-color objects of the kinds its new release (``kept``,
    its per-color objects) does not have: an HPA an earlier release left would go on scaling
    the color's Deployment, against the replicas now applied; a PDB, on guarding its pods."""
    have = {o.get("kind") for o in kept}
    return [
        path(
            namespace,
            {
                "apiVersion": f"{PER_COLOR[kind].group}/{_PER_COLOR_VERSIONS[kind]}",
                "kind": kind,
                "metadata": {"name": per_color_name(app, color)},
            },
        )
        for kind in PER_COLOR
        if kind not in have
    ]


def autoscaler_of(per_color: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The HPA among a release's per-color objects (as its manifests have them), if any."""
    return next((o for o in per_color if o.get("kind") == "HorizontalPodAutoscaler"), None)


def render_per_color(
    cfg: EnvironmentConfig, obj: Mapping[str, Any], color: Color
) -> dict[str, Any]:
    """``color``'s HPA, aimed at that color's Deployment, or PDB, selecting its pods, from
    the manifests' ``obj``."""
    out = _owned(cfg, obj, per_color_name(cfg.app, color), **{LABEL_COLOR: color})
    if obj.get("kind") == "HorizontalPodAutoscaler":
        out["spec"]["scaleTargetRef"] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_name(cfg.app, color),
        }
    else:
        out["spec"]["selector"] = {"matchLabels": selector(cfg.app, color)}
    return out


def render_shared(cfg: EnvironmentConfig, obj: RenderedObject) -> dict[str, Any]:
    """An object applied once for both colors, in the app's namespace with its labels."""
    return _owned(cfg, obj.data, _name(obj))


def config_map_name(app: str, obj: Mapping[str, Any]) -> str:
    """``<name>-<hash>``: the hash of the app, the name and the content, so a changed file
    is a new ConfigMap and an unchanged one is shared by the releases."""
    content = [app, obj["metadata"]["name"], obj.get("data") or {}, obj.get("binaryData") or {}]
    text = json.dumps(content, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:CONFIG_HASH_LENGTH]
    return f"{obj['metadata']['name']}-{digest}"


def render_config_maps(cfg: EnvironmentConfig, workload: Workload) -> list[dict[str, Any]]:
    """The release's immutable ConfigMaps, named by their content (``config_map_name``)."""
    out = []
    for obj in workload.config_maps:
        rendered = _owned(
            cfg, obj.data, config_map_name(cfg.app, obj.data), **{LABEL_RELEASE_CONFIG: "true"}
        )
        rendered["immutable"] = True
        out.append(rendered)
    return out


def renames(cfg: EnvironmentConfig, workload: Workload) -> dict[str, str]:
    """Each per-release ConfigMap's name in the manifests → its name in the cluster."""
    return {_name(o): config_map_name(cfg.app, o.data) for o in workload.config_maps}


def with_config_names(deployment: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """``deployment`` (changed in place and returned) reading the per-release ConfigMaps by
    their names in the cluster."""
    for ref in _config_ref_holders(deployment):
        ref["name"] = names.get(ref["name"], ref["name"])
    return deployment


def render_color(
    cfg: EnvironmentConfig,
    workload: Workload,
    *,
    color: Color,
    image: str,
    release_id: str,
    secret: ReleaseSecret | None = None,
) -> dict[str, Any]:
    """The workload's Deployment for ``color`` (``render_deployment``), reading the release's
    ConfigMaps by their names in the cluster; without replicas under an HPA, which owns
    them (an apply that set them would take them back at every deploy)."""
    obj = render_deployment(
        cfg, workload.templates, color=color, image=image, release_id=release_id, secret=secret
    )
    with_config_names(obj, renames(cfg, workload))
    if workload.autoscaler is not None:
        del obj["spec"]["replicas"]
    return obj


def stale_config_maps(existing: Iterable[str], in_use: Iterable[str]) -> list[str]:
    """The per-release ConfigMaps to delete: those no kept release and no Deployment reads."""
    return sorted(set(existing) - set(in_use))


def start_replicas(active: int | None, cfg_replicas: int, autoscaler: Mapping[str, Any]) -> int:
    """How many pods the idle color starts with under an HPA: as many as the active color
    runs now (``active``; before any, the configured count), within the HPA's bounds."""
    spec = autoscaler.get("spec") or {}
    low, high = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or cfg_replicas)
    return max(low, min(high, active or cfg_replicas))


def report(cfg: EnvironmentConfig, workload: Workload) -> list[str]:
    """One line per object Bascule will manage, and how (``bascule validate``)."""
    app = cfg.app
    colors = f"{deployment_name(app, 'blue')} and {deployment_name(app, 'green')}"
    names = renames(cfg, workload)
    how: dict[Handling, Callable[[RenderedObject], str]] = {
        "workload": lambda o: f"one Deployment per color, {colors}",
        "service": lambda o: (
            f"the active {service_name(app, 'active')} and the preview "
            f"{service_name(app, 'preview')}"
        ),
        "per color": lambda o: f"one per color, {colors}, each for its color's pods",
        "per release": lambda o: f"immutable, as {names[_name(o)]}",
        "shared": lambda o: "once, shared by both colors",
    }
    return [
        f"{described(obj)} ({obj.origin}): {handling} — {how[handling](obj)}"
        for obj, handling in workload.managed()
    ]
