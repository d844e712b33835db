"""The permissions a run needs, read from the Roles shipped in ``deployments/rbac/``: the one
definition that preflight checks and that clusters are given (``bascule rbac ENV`` renders
it for an environment), so the two cannot drift. The shipped Roles name objects by
placeholders (``"{deployments}"``) that an environment's configuration fills in, so each
environment's Roles grant its own objects by name. And what an API request asks of RBAC
(the verb, group, resource and name the API server authorizes), to match the requests a run
makes against those Roles. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from bascule.config.environment import EnvironmentConfig
from bascule.errors import UsageError
from bascule.manifests import (
    LABEL_ENVIRONMENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ROLES,
    deployment_name,
    history_name,
    lease_name,
    service_name,
    service_proxy_name,
)
from bascule.vocabulary import COLORS
from bascule.workload import PER_COLOR, SHARED, Workload, per_color_name

# When a Role's rules are needed, from its annotation: always, with `secrets:` or the
# migration Job, and in the namespace a `promote_from` environment's history is read from.
NEEDED_FOR = "bascule.io/needed-for"
Feature = Literal["deploy", "secrets", "promote-source"]
FEATURES: tuple[Feature, ...] = ("deploy", "secrets", "promote-source")
# What the shipped Roles grant that preflight does not ask for, as (verb, group, resource):
# without it a run only posts no Kubernetes Events (tasks.kubeevents), which must never stop
# a deploy.
BEST_EFFORT = frozenset({("create", "", "events")})
# The account every environment's runs use, in the namespace of its environment file.
ACCOUNT = "bascule"
RBAC_GROUP = "rbac.authorization.k8s.io"

# What a shipped Role's resourceNames (and verbs) may name in braces, ``"{services}"``: each
# is filled in from an app's configuration (``values``). A rule whose names all fill in to
# nothing is left out: RBAC reads no resourceNames as every name.
PLACEHOLDERS = (
    "deployments",  # the two colors' Deployments
    "services",  # the active and preview Services
    "service_proxies",  # those Services' first port, as the service proxy names them
    "proxy_verbs",  # the verbs of the HTTP methods the checks send through that proxy
    "history",  # the history ConfigMap
    "lease",  # the deploy lock
    "secret_sources",  # the Kubernetes Secrets `secrets:` reads (kubernetes_secret)
    # The objects of the app's manifests besides its workload (bascule.workload), by kind:
    # "{horizontalpodautoscalers}" names the two colors' HPAs when the manifests have one,
    # "{shared_ingresses}" the manifests' Ingresses, applied once.
    *(kind.plural for kind in PER_COLOR.values()),
    # The colors' HPA and PDB names whether the manifests have them or not: a color's one that
    # its new release no longer has is deleted.
    "per_color_names",
    *(f"shared_{kind.plural}" for kind in SHARED.values()),
)
Values = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class Rule:
    """One PolicyRule of a Role; ``resources`` as RBAC writes them (``pods/log``)."""

    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str] = frozenset()


@dataclass(frozen=True, order=True)
class Permission:
    """What RBAC authorizes one request by (a SelfSubjectAccessReview's resourceAttributes)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        group = f"{self.group}/" if self.group else ""
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {group}{self.full_resource}{named}"


@dataclass(frozen=True)
class RoleDef:
    """One shipped Role: its name, the feature it is needed for, its rules (placeholders
    unfilled)."""

    name: str
    feature: Feature
    rules: tuple[Rule, ...]


def parse(text: str, source: str) -> dict[Feature, tuple[Rule, ...]]:
    """The rules of each feature's Roles in a YAML stream (ServiceAccounts and bindings
    beside them are passed over); a UsageError naming ``source`` if a Role is malformed."""
    return by_feature(parse_roles(text, source))


def by_feature(roles: Iterable[RoleDef]) -> dict[Feature, tuple[Rule, ...]]:
    out: dict[Feature, tuple[Rule, ...]] = {}
    for role in roles:
        out[role.feature] = out.get(role.feature, ()) + role.rules
    return out


def parse_roles(text: str, source: str) -> list[RoleDef]:
    """The Roles of a YAML stream, in order; a UsageError naming ``source`` if one is
    malformed."""
    out: list[RoleDef] = []
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not YAML: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Role":
            continue
        meta = doc.get("metadata") or {}
        where = f"{source}: Role {meta.get('name', '?')}"
        feature = (meta.get("annotations") or {}).get(NEEDED_FOR)
        if feature not in FEATURES:
            raise UsageError(
                f"{where}: annotation {NEEDED_FOR} is {feature!r} — set it to one of "
                f"{', '.join(FEATURES)}"
            )
        rules = tuple(
            _rule(r, f"{where}: rules[{i}]") for i, r in enumerate(doc.get("rules") or [])
        )
        out.append(RoleDef(str(meta.get("name", "")), feature, rules))
    return out


def _rule(data: Any, where: str) -> Rule:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a mapping — write apiGroups, resources and verbs")

    def strings(key: str, required: bool = True) -> frozenset[str]:
        value = data.get(key)
        if value is None and not required:
            return frozenset()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: {key} must be a list of strings")
        return frozenset(value)

    rule = Rule(
        strings("apiGroups"),
        strings("resources"),
        strings("verbs"),
        strings("resourceNames", False),
    )
    unknown = sorted(
        v
        for v in rule.verbs | rule.names
        if v.startswith("{") and v.strip("{}") not in PLACEHOLDERS
    )
    if unknown:
        raise UsageError(
            f"{where}: unknown placeholder(s) {', '.join(unknown)} — use one of "
            + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        )
    return rule


def fill(rules: Iterable[Rule], values: Values) -> tuple[Rule, ...]:
    """``rules`` with their placeholders filled in from ``values``; a rule left without
    verbs, or without names where it named some, is left out (it would grant every name)."""

    def filled(items: frozenset[str]) -> frozenset[str]:
        out: set[str] = set()
        for item in items:
            key = item.strip("{}") if item.startswith("{") else None
            out |= values.get(key, frozenset()) if key is not None else {item}
        return frozenset(out)

    out = []
    for rule in rules:
        names, verbs = filled(rule.names), filled(rule.verbs)
        if verbs and (names or not rule.names):
            out.append(Rule(rule.groups, rule.resources, verbs, names))
    return tuple(out)


def method_verb(method: str) -> str:
    """The verb RBAC authorizes a request to a named object by, from its HTTP method."""
    return _VERBS.get(method, method.lower())


def values(cfg: EnvironmentConfig, workload: Workload) -> dict[str, frozenset[str]]:
    """What the placeholders of the shipped Roles name for one app of an environment."""
    proxied = [c.method for c in cfg.checks.smoke.http if not c.url]
    proxied += ["GET" for c in cfg.checks.health if not c.url]
    templates = workload.templates
    per_color_names = frozenset(per_color_name(cfg.app, c) for c in COLORS)
    per_color = {PER_COLOR[str(o.data["kind"])].plural: per_color_names for o in workload.per_color}
    shared: dict[str, set[str]] = {}
    for o in workload.shared:
        plural = SHARED[str(o.data["kind"])].plural
        shared.setdefault(f"shared_{plural}", set()).add(str(o.data["metadata"]["name"]))
    return (
        per_color
        | {key: frozenset(names) for key, names in shared.items()}
        | {
            "deployments": frozenset(deployment_name(cfg.app, c) for c in COLORS),
            "per_color_names": per_color_names,
            "services": frozenset(service_name(cfg.app, r) for r in ROLES),
            "service_proxies": frozenset(service_proxy_name(cfg.app, templates, r) for r in ROLES),
            "proxy_verbs": frozenset(method_verb(m) for m in proxied),
            "history": frozenset({history_name(cfg.app)}),
            "lease": frozenset({lease_name(cfg.app)}),
            "secret_sources": frozenset(
                ref.kubernetes_secret.name
                for ref in cfg.secrets.values()
                if ref.kubernetes_secret is not None
            ),
        }
    )


def merged(many: Iterable[Values]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for one in many:
        for key, names in one.items():
            out[key] = out.get(key, frozenset()) | names
    return out


def permissions(rules: Iterable[Rule], namespace: str = "") -> list[Permission]:
    """Each (verb, group, resource) the rules grant, in ``namespace``: what preflight asks."""
    out = set()
    for rule in rules:
        for group in rule.groups:
            for full in rule.resources:
                resource, _, sub = full.partition("/")
                # The namespace itself is asked for by name: that is how its GET is authorized.
                names = rule.names or {namespace if resource == "namespaces" else ""}
                for verb in rule.verbs:
                    out |= {Permission(verb, group, resource, sub, namespace, n) for n in names}
    return sorted(out)


def features(cfg: EnvironmentConfig) -> list[Feature]:
    """The features whose Roles a run of this environment needs in its own namespace."""
    job_migrations = cfg.migrations is not None and cfg.migrations.runner == "job"
    return ["deploy", "secrets"] if cfg.secrets or job_migrations else ["deploy"]


def needed(
    definition: Mapping[Feature, tuple[Rule, ...]],
    wanted: Iterable[Feature],
    namespace: str,
    names: Values,
) -> list[Permission]:
    """What preflight asks for: every permission the ``wanted`` features' Roles grant, their
    placeholders filled in with ``names``, but those granted as a courtesy (BEST_EFFORT)."""
    granted = permissions(
        fill((r for f in wanted for r in definition.get(f, ())), names), namespace
    )
    return [p for p in granted if not best_effort(p)]


def best_effort(p: Permission) -> bool:
    """Whether a run does without ``p`` (BEST_EFFORT)."""
    return (p.verb, p.group, p.resource) in BEST_EFFORT


# --- an environment's Roles, as `bascule rbac ENV` prints them ------------------------------


@dataclass(frozen=True)
class Grant:
    """What an environment's account needs in one namespace: the features whose Roles it
    gets there and the names their placeholders stand for (every app there together)."""

    namespace: str
    features: tuple[Feature, ...]
    names: Values = field(default_factory=dict)


def app_grant(cfg: EnvironmentConfig, workload: Workload) -> Grant:
    """What a run of this app needs in its own namespace."""
    return Grant(cfg.namespace, tuple(features(cfg)), values(cfg, workload))


def source_grant(source: EnvironmentConfig, workload: Workload) -> Grant:
    """What a `promote_from` run reads in its source environment's namespace: the source
    app's history (the check) and active Service (`bascule promote`)."""
    return Grant(source.namespace, ("promote-source",), values(source, workload))


def environment_manifests(
    environment: str, home: str, roles: Sequence[RoleDef], grants: Iterable[Grant]
) -> list[dict[str, Any]]:
    """The ServiceAccount ``bascule`` of ``environment`` in namespace ``home`` and, in each
    namespace of ``grants``, the Roles its features need, filled in, each bound to that one
    account. Objects outside ``home`` carry the environment's name, so the Roles of two
    environments that share a namespace (promotion's source) do not overwrite each other."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ENVIRONMENT: environment}
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": ACCOUNT, "namespace": home, "labels": labels},
        }
    ]
    together: dict[str, tuple[set[Feature], list[Values]]] = {}
    for grant in grants:
        wanted, names = together.setdefault(grant.namespace, (set(), []))
        wanted.update(grant.features)
        names.append(grant.names)
    for namespace, (wanted, names) in together.items():
        filled_names = merged(names)
        for role in roles:
            rules = fill(role.rules, filled_names) if role.feature in wanted else ()
            if not rules:
                continue
            name = role.name if namespace == home else f"{role.name}-{environment}"
            meta = {"name": name, "namespace": namespace, "labels": labels}
            out.append(
                {
                    "apiVersion": f"{RBAC_GROUP}/v1",
                    "kind": "Role",
                    "metadata": {**meta, "annotations": {NEEDED_FOR: role.feature}},
                    "rules": [_rule_document(r) for r in rules],
                }
            )
            out.append(
                {
                    "apiVersion": f"{RBAC_GROUP}/v1",
                    "kind": "RoleBinding",
                    "metadata": meta,
                    "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": home}],
                }
            )
    return out


def _rule_document(rule: Rule) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiGroups": sorted(rule.groups),
        "resources": sorted(rule.resources),
        "verbs": sorted(rule.verbs),
    }
    if rule.names:
        doc["resourceNames"] = sorted(rule.names)
    return doc


def allows(rules: Iterable[Rule], want: Permission) -> bool:
    """Whether ``rules`` grant ``want`` (as RBAC matches them, wildcards included)."""

    def has(values: frozenset[str], value: str) -> bool:
        return "*" in values or value in values

    return any(
        has(r.verbs, want.verb)
        and has(r.groups, want.group)
        and (
            has(r.resources, want.full_resource)
            or (bool(want.subresource) and f"*/{want.subresource}" in r.resources)
        )
        and (not r.names or want.name in r.names)
        for r in rules
    )


def rules_of_review(status: Mapping[str, Any]) -> list[Rule]:
    """The resource rules a SelfSubjectRulesReview answered."""
    return [
        Rule(
            frozenset(r.get("apiGroups") or ()),
            frozenset(r.get("resources") or ()),
            frozenset(r.get("verbs") or ()),
            frozenset(r.get("resourceNames") or ()),
        )
        for r in status.get("resourceRules") or []
    ]


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "HEAD": "get"}


def request_permission(method: str, path: str, params: Mapping[str, str]) -> Permission | None:
    """What the API server authorizes a request by, as its request-info parsing does; None
    for a path outside the resource API (``/version``, discovery)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        # The namespace object itself: authorized in that namespace, by its name.
        rest = rest[2:] if len(rest) > 2 else ["namespaces", namespace]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method in _VERBS:
        verb = _VERBS[method]
    elif method == "GET":
        verb = "get" if name else "watch" if params.get("watch") in ("true", "1") else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = method.lower()
    if verb in ("list", "watch"):
        # A list or watch of one object by name is authorized by that name.
        for term in params.get("fieldSelector", "").split(","):
            key, _, value = term.partition("=")
            if key == "metadata.name" and value.lstrip("="):
                name = value.lstrip("=")
    return Permission(verb, group, resource, subresource, namespace, name)
