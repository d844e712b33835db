"""The permissions a run needs, read from the Roles shipped in ``deployments/rbac/``: the one
definition that preflight checks and that clusters are given, so the two cannot drift. And
what an API request asks of RBAC (the verb, group and resource the API server authorizes),
to match the requests a run makes against those Roles. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from bascule.config import EnvironmentConfig
from bascule.errors import UsageError

# When a Role's rules are needed, from its annotation: always, with `secrets:` or the
# migration Job, and in the namespace a `promote_from` environment's history is read from.
NEEDED_FOR = "bascule.io/needed-for"
Feature = Literal["deploy", "secrets", "promote-source"]
FEATURES: tuple[Feature, ...] = ("deploy", "secrets", "promote-source")


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
        return f"{self.verb} {group}{self.full_resource}"


def parse(text: str, source: str) -> dict[Feature, tuple[Rule, ...]]:
    """The rules of each feature's Roles in a YAML stream (ServiceAccounts and bindings
    beside them are passed over); a UsageError naming ``source`` if a Role is malformed."""
    out: dict[Feature, tuple[Rule, ...]] = {}
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
        out[feature] = out.get(feature, ()) + rules
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

    return Rule(
        strings("apiGroups"),
        strings("resources"),
        strings("verbs"),
        strings("resourceNames", False),
    )


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
    definition: Mapping[Feature, tuple[Rule, ...]], wanted: Iterable[Feature], namespace: str
) -> list[Permission]:
    """What preflight asks for: every permission the ``wanted`` features' Roles grant."""
    return permissions((r for f in wanted for r in definition.get(f, ())), namespace)


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
    return Permission(verb, group, resource, subresource, namespace, name)
