"""The Role definition as preflight reads it, requests as RBAC authorizes them, preflight's
permission check on a fake API, and the request recording of the client."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bascule import rbac
from bascule.cli import main
from bascule.config import AppSecret, EnvironmentConfig, SmokeHttpScenario
from bascule.config_files import load_environment, load_templates, shipped_roles
from bascule.errors import UsageError
from bascule.kube import RECORD_ENV
from bascule.kubeconfig import token_kubeconfig
from bascule.rbac import Permission, Rule
from bascule.rendered import RenderedObject
from bascule.tasks import preflight, rollout
from bascule.tasks.context import Env
from bascule.workload import Workload, classify, from_templates
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


def in_process(cfg: EnvironmentConfig) -> EnvironmentConfig:
    """``cfg`` with its migrations run by the process runner: no Secret of the Job's URL."""
    assert cfg.migrations is not None
    return cfg.model_copy(
        update={"migrations": cfg.migrations.model_copy(update={"runner": "process"})}
    )


def staging(tmp: Path) -> tuple[Env, FakeApi]:
    cfg = in_process(load_environment(REPO / "deployments" / "staging.yaml"))
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
    plain = in_process(load_environment(REPO / "deployments" / "staging.yaml"))
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


def two_templates(cfg: EnvironmentConfig) -> Workload:
    """The shipped manifests' workload: a Deployment and a Service, nothing else."""
    return classify(from_templates(load_templates(cfg.manifests)), cfg.workload)


def two_apps(tmp: Path) -> list[rbac.Grant]:
    """Staging's sample app (a Kubernetes Secret source, a POST smoke scenario, a check at
    its own URL) and a second app in another namespace, with production promoting from it."""
    cfg = in_process(load_environment(REPO / "deployments" / "staging.yaml"))
    workload = two_templates(cfg)
    smoke = cfg.checks.smoke.model_copy(
        update={
            "http": [
                *cfg.checks.smoke.http,
                SmokeHttpScenario(name="post", path="/api/items", method="POST"),
                SmokeHttpScenario(name="out", path="/x", method="PUT", url="http://{service}"),
            ]
        }
    )
    sample = cfg.model_copy(
        update={
            "secrets": {
                "DB": AppSecret.model_validate(
                    {"kubernetes_secret": {"name": "db-source", "key": "url"}}
                ),
                "TOKEN": AppSecret.model_validate({"env": "T"}),
            },
            "checks": cfg.checks.model_copy(update={"smoke": smoke}),
        }
    )
    api = cfg.model_copy(update={"app": "api", "namespace": "apis"})
    source = cfg.model_copy(update={"namespace": "bascule-dev"})
    return [
        rbac.app_grant(sample, workload),
        rbac.app_grant(api, workload),
        rbac.source_grant(source, workload),
    ]


def rules_of(docs: list[dict[str, Any]], namespace: str, role: str) -> list[dict[str, Any]]:
    (found,) = [
        d
        for d in docs
        if d["kind"] == "Role"
        and d["metadata"]["namespace"] == namespace
        and d["metadata"]["name"] == role
    ]
    return list(found["rules"])


def test_an_environments_roles_name_its_own_objects(tmp_path: Path) -> None:
    docs = rbac.environment_manifests(
        "staging", "bascule-staging", shipped_roles(), two_apps(tmp_path)
    )
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account["metadata"] | {"labels": {}} == {
        "name": "bascule",
        "namespace": "bascule-staging",
        "labels": {},
    }
    # One account: every binding, in every namespace, names it and nothing else.
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in bindings} == {
        ("bascule-staging", "bascule"),
        ("bascule-staging", "bascule-secrets"),
        ("apis", "bascule-staging"),
        ("bascule-dev", "bascule-promote-source-staging"),
    }
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "bascule", "namespace": "bascule-staging"}
        ]
        assert b["roleRef"]["name"] == b["metadata"]["name"]

    secrets = rules_of(docs, "bascule-staging", "bascule-secrets")
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["db-source"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    ]
    deploy = rules_of(docs, "bascule-staging", "bascule")
    proxy = [r for r in deploy if r["resources"] == ["services/proxy"]]
    # GET for the health checks and the GET scenario, POST's create; not the PUT sent to
    # the app's own URL, which does not pass through the API server.
    assert proxy == [
        {
            "apiGroups": [""],
            "resources": ["services/proxy"],
            "verbs": ["create", "get"],
            "resourceNames": ["sample-app-preview:http", "sample-app:http"],
        }
    ]
    named = {r["resources"][0]: r.get("resourceNames") for r in deploy if "get" in r["verbs"]}
    assert named["deployments"] == ["sample-app-blue", "sample-app-green"]
    assert named["services"] == ["sample-app", "sample-app-preview"]
    # Stored release objects have names made per release: ConfigMaps are read unnamed, and
    # only the history is updated.
    assert named["configmaps"] is None
    updated = [r.get("resourceNames") for r in deploy if r["verbs"] == ["update"]]
    assert ["sample-app-bascule-history"] in updated, updated
    assert named["leases"] == ["sample-app-bascule-deploy"]
    # The other app's namespace: its own names, no Secrets Role (it has no secrets).
    other = rules_of(docs, "apis", "bascule-staging")
    assert {n for r in other for n in r.get("resourceNames", [])} >= {"api-blue", "api:http"}
    assert not [n for r in other for n in r.get("resourceNames", []) if "sample-app" in n]
    assert rules_of(docs, "bascule-dev", "bascule-promote-source-staging") == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get"],
            "resourceNames": ["sample-app-bascule-history"],
        },
        {
            "apiGroups": [""],
            "resources": ["services"],
            "verbs": ["get"],
            "resourceNames": ["sample-app", "sample-app-preview"],
        },
    ]
    # Nothing lists Secrets; every get or update of a namespaced object names it, but for
    # the generated names of pods, their logs, Jobs and stored release objects (ConfigMaps,
    # which pruning lists anyway).
    for doc in docs:
        for rule in doc.get("rules", []):
            assert not ("secrets" in rule["resources"] and "list" in rule["verbs"]), rule
            unnamed = {"namespaces", "pods/log", "jobs", "configmaps"}
            if {"get", "patch", "update"} & set(rule["verbs"]) and not unnamed & set(
                rule["resources"]
            ):
                assert rule.get("resourceNames"), rule


def test_an_environment_without_secrets_gets_no_secrets_role(tmp_path: Path) -> None:
    cfg = in_process(load_environment(REPO / "deployments" / "staging.yaml"))
    grant = rbac.app_grant(cfg, two_templates(cfg))
    docs = rbac.environment_manifests("staging", cfg.namespace, shipped_roles(), [grant])
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Role"] == ["bascule"]
    assert not [r for r in docs[1]["rules"] if r["resources"] == ["secrets"]]


def test_the_cli_prints_what_preflight_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bascule rbac staging` and preflight's list come from the same definition."""
    assert main(["rbac", "--dir", str(REPO / "deployments"), "staging"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    granted = [r for rules in rbac.parse(yaml.safe_dump_all(docs), "out").values() for r in rules]
    cfg = load_environment(REPO / "deployments" / "staging.yaml")  # as shipped: runner job
    env = Env(cfg, load_templates(cfg.manifests), fake_kube(tmp_path)[0])
    printed = rbac.permissions(granted, env.ns)
    # All of it but the Events, which a run does without (and then posts none).
    assert [p for p in printed if not rbac.best_effort(p)] == preflight.needed(env)
    assert [str(p) for p in printed if rbac.best_effort(p)] == ["create events"]


def test_a_kubeconfig_holds_one_token_and_the_admins_server_and_ca() -> None:
    config = token_kubeconfig(
        server="https://10.0.0.1:6443", ca=b"PEM", token="t0k", name="bascule-ns", namespace="ns"
    )
    assert config["clusters"] == [
        {
            "name": "bascule-ns",
            "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": "UEVN"},
        }
    ]
    assert config["users"] == [{"name": "bascule-ns", "user": {"token": "t0k"}}]
    assert config["contexts"][0]["context"]["namespace"] == "ns"
    assert config["current-context"] == "bascule-ns"
    insecure = token_kubeconfig(
        server="https://x", ca=None, token="t", name="n", namespace="ns", insecure=True
    )
    assert insecure["clusters"][0]["cluster"] == {
        "server": "https://x",
        "insecure-skip-tls-verify": True,
    }


def test_old_release_secrets_are_deleted_by_name_never_listed(tmp_path: Path) -> None:
    """The Secrets the history named when the run read it, less those a kept release or a
    Deployment uses, are deleted one by one; no request lists Secrets."""
    env, api = staging(tmp_path)
    env.secrets_seen = {"sample-app-secrets-old", "sample-app-secrets-kept"}
    env.secrets = {"TOKEN": "a-long-enough-value"}
    current = env.release_secret
    assert current is not None
    ref = {"name": "T", "valueFrom": {"secretKeyRef": {"name": "sample-app-secrets-live"}}}
    api.put(
        env.deployment("blue"),
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [ref]}]}}}},
    )
    env.secrets_seen.add("sample-app-secrets-live")
    deleted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response | None:
        if request.method == "DELETE":
            deleted.append(request.url.path.rsplit("/", 1)[1])
            return httpx.Response(200, json={})
        return None

    api.handlers[:] = [handler]
    gone = rollout.prune_secrets(env, {"sample-app-secrets-kept"})
    # The run's own Secret is no Deployment's here, nor kept: it goes too.
    assert gone == deleted == sorted(["sample-app-secrets-old", current.name])
    assert not [r for r in api.requests if r[1].endswith("/secrets")]


def test_the_objects_of_the_manifests_are_granted_by_kind_and_name() -> None:
    """An HPA, a PDB, an Ingress and a ConfigMap the pods do not read: create and patch (the
    server-side apply) of exactly those names; a kind the manifests lack, nothing."""
    cfg = in_process(load_environment(REPO / "deployments" / "staging.yaml"))
    base = from_templates(load_templates(cfg.manifests))
    pod_labels = {"tier": "web"}  # what the PDB selects, on the template's pods
    labelled = copy.deepcopy(dict(base[0].data))
    labelled["spec"]["template"]["metadata"]["labels"] = pod_labels
    base[0] = RenderedObject(labelled, base[0].origin)
    deployment = labelled["metadata"]["name"]
    extra = [
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "hpa"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": deployment}},
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "pdb"},
            "spec": {"selector": {"matchLabels": pod_labels}},
        },
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dashboards"}},
    ]
    workload = classify([*base, *(RenderedObject(o, "m.yaml:1") for o in extra)], cfg.workload)
    docs = rbac.environment_manifests(
        "staging", cfg.namespace, shipped_roles(), [rbac.app_grant(cfg, workload)]
    )
    without = rbac.environment_manifests(
        "staging", cfg.namespace, shipped_roles(), [rbac.app_grant(cfg, two_templates(cfg))]
    )

    added = [r for r in docs[1]["rules"] if r not in without[1]["rules"]]
    colors = [f"{cfg.app}-blue", f"{cfg.app}-green"]
    assert added == [
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers"],
            "verbs": ["create", "patch"],
            "resourceNames": colors,
        },
        {
            "apiGroups": ["policy"],
            "resources": ["poddisruptionbudgets"],
            "verbs": ["create", "patch"],
            "resourceNames": colors,
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["patch"],
            "resourceNames": ["dashboards"],
        },
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["ingresses"],
            "verbs": ["create", "patch"],
            "resourceNames": ["web"],
        },
    ]
    assert len(docs[1]["rules"]) == len(without[1]["rules"]) + len(added)
