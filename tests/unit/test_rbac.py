"""The Role definition as preflight reads it, requests as RBAC authorizes them, preflight's
permission check on a fake API, and the request recording of the client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bascule import rbac
from bascule.config import load_environment
from bascule.errors import UsageError
from bascule.kube import RECORD_ENV
from bascule.manifests import load_templates
from bascule.rbac import Permission, Rule
from tasks import preflight
from tasks.context import Env
from tests.support.fakekube import FakeApi, fake_kube

REPO = Path(__file__).resolve().parents[2]

ROLES = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: bascule}
---
kind: Role
metadata: {name: a, annotations: {bascule.io/needed-for: deploy}}
rules:
  - {apiGroups: [apps], resources: [deployments], verbs: [get, patch]}
  - {apiGroups: [""], resources: [pods/log], verbs: [get]}
---
kind: Role
metadata: {name: b, annotations: {bascule.io/needed-for: secrets}}
rules:
  - {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [one]}
  - {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: ["{secret_sources}"]}
  - {apiGroups: [""], resources: [services/proxy], verbs: ["{proxy_verbs}"], resourceNames: [s]}
"""


def test_roles_are_read_by_feature_and_expanded_into_permissions() -> None:
    parsed = rbac.parse(ROLES, "roles.yaml")
    assert set(parsed) == {"deploy", "secrets"}
    assert [str(p) for p in rbac.needed(parsed, ["deploy"], "ns", {})] == [
        "get pods/log",
        "get apps/deployments",
        "patch apps/deployments",
    ]
    names = {"secret_sources": frozenset({"db", "api"}), "proxy_verbs": frozenset({"create"})}
    both = rbac.needed(parsed, ["deploy", "secrets"], "ns", names)
    assert Permission("get", "", "pods", "log", "ns") in both
    assert [str(p) for p in both if p.resource != "pods" and p.group != "apps"] == [
        "create services/proxy s",
        "get secrets api",  # the placeholder's names, each asked for by name
        "get secrets db",
        "get secrets one",
    ]


def test_a_placeholder_that_names_nothing_grants_nothing() -> None:
    """RBAC reads an empty resourceNames as every name: such a rule is left out."""
    parsed = rbac.parse(ROLES, "roles.yaml")
    secrets = rbac.needed(parsed, ["secrets"], "ns", {})
    assert [str(p) for p in secrets] == ["get secrets one"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Role\nmetadata: {name: r}\nrules: []\n", "annotation bascule.io/needed-for"),
        (
            "kind: Role\nmetadata: {name: r, annotations: {bascule.io/needed-for: deploy}}\n"
            "rules: [{apiGroups: [''], resources: pods, verbs: [get]}]\n",
            "Role r: rules[0]: resources must be a list of strings",
        ),
        ("kind: Role\nrules: [\n", "not YAML"),
        (
            "kind: Role\nmetadata: {name: r, annotations: {bascule.io/needed-for: deploy}}\n"
            "rules: [{apiGroups: [''], resources: [pods], verbs: [get], "
            "resourceNames: ['{pods}']}]\n",
            "Role r: rules[0]: unknown placeholder(s) {pods} — use one of {deployments}",
        ),
    ],
)
def test_a_malformed_role_is_named_with_its_file(text: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        rbac.parse(text, "x/roles.yaml")
    assert str(err.value).startswith("x/roles.yaml:") and message in str(err.value)


def test_the_shipped_roles_cover_each_feature() -> None:
    roles = preflight.definition()
    assert set(roles) == set(rbac.FEATURES)
    deploy = rbac.needed(roles, ["deploy"], "ns", {})
    assert Permission("get", "", "namespaces", "", "ns", "ns") in deploy
    assert Permission("watch", "discovery.k8s.io", "endpointslices", "", "ns") in deploy
    assert not [p for p in deploy if p.resource == "secrets"]  # only with the secrets Role


def test_rules_match_as_rbac_matches_them() -> None:
    rules = [
        Rule(frozenset({""}), frozenset({"pods/log", "services"}), frozenset({"get"})),
        Rule(frozenset({"apps"}), frozenset({"*"}), frozenset({"list"})),
        Rule(frozenset({""}), frozenset({"secrets"}), frozenset({"*"}), frozenset({"one"})),
        Rule(frozenset({"*"}), frozenset({"*/status"}), frozenset({"get"})),
    ]
    assert rbac.allows(rules, Permission("get", "", "pods", "log"))
    assert not rbac.allows(rules, Permission("get", "", "pods"))  # the subresource only
    assert not rbac.allows(rules, Permission("get", "", "services", "proxy"))
    assert rbac.allows(rules, Permission("list", "apps", "replicasets"))
    assert not rbac.allows(rules, Permission("list", "batch", "jobs"))
    assert rbac.allows(rules, Permission("delete", "", "secrets", name="one"))
    assert not rbac.allows(rules, Permission("delete", "", "secrets", name="two"))
    assert rbac.allows(rules, Permission("get", "batch", "jobs", "status"))  # */status
    assert not rbac.allows(rules, Permission("get", "", "status"))


@pytest.mark.parametrize(
    ("method", "path", "params", "expected"),
    [
        ("GET", "/api/v1/namespaces/n/pods", {}, ("list", "", "pods", "", "n", "")),
        ("GET", "/api/v1/namespaces/n/pods", {"watch": "true"}, ("watch", "", "pods", "", "n", "")),
        ("GET", "/api/v1/namespaces/n/pods/p/log", {}, ("get", "", "pods", "log", "n", "p")),
        ("GET", "/api/v1/namespaces/n", {}, ("get", "", "namespaces", "", "n", "n")),
        ("GET", "/api/v1/nodes", {}, ("list", "", "nodes", "", "", "")),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/n/deployments/a-blue",
            {},
            ("patch", "apps", "deployments", "", "n", "a-blue"),
        ),
        (
            "POST",
            "/api/v1/namespaces/n/services/a:http/proxy/x/y",
            {},
            ("create", "", "services", "proxy", "n", "a:http"),
        ),
        (
            "HEAD",
            "/api/v1/namespaces/n/services/a/proxy/",
            {},
            ("get", "", "services", "proxy", "n", "a"),
        ),
        (
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/n/leases/l",
            {},
            ("update", "coordination.k8s.io", "leases", "", "n", "l"),
        ),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/n/jobs/j",
            {},
            ("delete", "batch", "jobs", "", "n", "j"),
        ),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/n/jobs",
            {},
            ("deletecollection", "batch", "jobs", "", "n", ""),
        ),
        (
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/n/leases",
            {"watch": "1", "fieldSelector": "metadata.name=l"},
            ("watch", "coordination.k8s.io", "leases", "", "n", "l"),
        ),
        (
            "OPTIONS",
            "/api/v1/namespaces/n/services/s/proxy/",
            {},
            ("options", "", "services", "proxy", "n", "s"),
        ),
    ],
)
def test_a_request_is_authorized_by_its_verb_and_resource(
    method: str, path: str, params: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert rbac.request_permission(method, path, params) == Permission(*expected)


@pytest.mark.parametrize("path", ["/version", "/api", "/apis/apps/v1", "/healthz"])
def test_paths_outside_the_resource_api_ask_for_no_resource(path: str) -> None:
    assert rbac.request_permission("GET", path, {}) is None


def staging(tmp: Path) -> tuple[Env, FakeApi]:
    cfg = load_environment(REPO / "deployments" / "staging.yaml")
    kube, api = fake_kube(tmp)
    return Env(cfg, load_templates(cfg.manifests), kube), api


def answer_reviews(api: FakeApi, rules: list[dict[str, Any]], allowed: set[str]) -> list[dict]:
    """The fake API answers the rules review with ``rules`` and each access review by
    whether its resource is in ``allowed``; returns the access reviews asked."""
    asked: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/selfsubjectrulesreviews"):
            return httpx.Response(201, json={"status": {"resourceRules": rules}})
        if request.url.path.endswith("/selfsubjectaccessreviews"):
            attrs = json.loads(request.content)["spec"]["resourceAttributes"]
            asked.append(attrs)
            return httpx.Response(201, json={"status": {"allowed": attrs["resource"] in allowed}})
        return None

    api.handlers[:] = [handler]
    return asked


def test_preflight_asks_once_when_the_rules_grant_everything(tmp_path: Path) -> None:
    env, api = staging(tmp_path)
    asked = answer_reviews(api, [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], set())
    assert preflight.permissions(env) == [] and asked == []


def test_preflight_names_what_neither_review_allows(tmp_path: Path) -> None:
    env, api = staging(tmp_path)
    needed = preflight.needed(env)
    # The rules review shows all but leases; the access reviews allow them, then do not.
    shown = sorted({p.full_resource for p in needed} - {"leases"})
    rules = [{"apiGroups": ["*"], "resources": shown, "verbs": ["*"]}]
    asked = answer_reviews(api, rules, {"leases"})
    assert preflight.permissions(env) == []
    assert sorted(a["verb"] for a in asked) == ["create", "get", "update", "watch"]
    answer_reviews(api, rules, set())
    assert preflight.permissions(env) == [
        "create coordination.k8s.io/leases",
        "get coordination.k8s.io/leases sample-app-bascule-deploy",
        "update coordination.k8s.io/leases sample-app-bascule-deploy",
        "watch coordination.k8s.io/leases sample-app-bascule-deploy",
    ]


def test_secrets_are_checked_only_for_an_environment_that_uses_them(tmp_path: Path) -> None:
    plain = load_environment(REPO / "deployments" / "staging.yaml")
    assert rbac.features(plain) == ["deploy"]
    with_secrets = plain.model_copy(update={"secrets": {"TOKEN": {"env": "T"}}})
    assert rbac.features(with_secrets) == ["deploy", "secrets"]
    assert plain.migrations is not None
    in_job = plain.model_copy(
        update={"migrations": plain.migrations.model_copy(update={"runner": "job"})}
    )
    assert rbac.features(in_job) == ["deploy", "secrets"]


def test_the_client_records_each_permission_once_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "requests.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(record))
    kube, api = fake_kube(tmp_path)
    api.put("/api/v1/namespaces/n/pods", {"items": []})
    for _ in range(3):
        kube.get("/api/v1/namespaces/n/pods")
    kube.get("/version")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines == [
        {
            "verb": "list",
            "group": "",
            "resource": "pods",
            "subresource": "",
            "namespace": "n",
            "name": "",
        }
    ]
    monkeypatch.delenv(RECORD_ENV)
    quiet, api = fake_kube(tmp_path)  # off by default
    api.put("/api/v1/namespaces/n/events", {"items": []})
    quiet.get("/api/v1/namespaces/n/events")
    assert len(record.read_text().splitlines()) == 1
