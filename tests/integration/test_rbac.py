"""Least privilege on the real cluster: the pipeline runs as the environment's ServiceAccount
with the Roles `bascule rbac ENV` generates from its config (the shipped Roles of
deployments/rbac/ filled in with its objects' names), through a token bound to nothing else
(`bascule kubeconfig ENV`), with every API request recorded: a first deploy with a smoke Job
and secrets, a deploy killed at the switch and run again (the reconcile, the old color's
scale-down), a rollback, and a migration Job. Each recorded request is one the Roles allow,
each permission they grant was used (or is named below with what uses it), and the token
reads no Secret of another namespace and no node. Preflight, against the cluster's RBAC,
names what a narrower Role lacks. And the attacks a dev run's token could try on production,
each refused by the API server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule import kube as k
from bascule import rbac
from bascule.cli import main
from bascule.cli.access import rbac_documents
from bascule.config_files import shipped_roles
from bascule.kube import RECORD_ENV, Kube, KubeError, Target
from bascule.manifests import restricted_context
from bascule.tasks import migration_phase, preflight
from bascule.tasks.context import Env
from tests.support import deploys, sample
from tests.support.access import apply_rbac, env_kubeconfig
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs
from tests.support.migrations import URL_VARIABLE, scripts, section
from tests.support.postgres import database

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
SOURCE = "BASCULE_TEST_RBAC_TOKEN"  # the variable the app's secret comes from
SOURCE_SECRET = "app-source"  # the Kubernetes Secret another secret variable comes from
SECRETS = {
    "APP_TOKEN": {"env": SOURCE},
    "APP_KEY": {"kubernetes_secret": {"name": SOURCE_SECRET, "key": "key"}},
}
# Granted to every authenticated user by Kubernetes' default ClusterRoles (system:basic-user).
EVERYONE = {
    ("create", "authorization.k8s.io", "selfsubjectrulesreviews"),
    ("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
}
# Cluster-wide reads of preflight's capacity estimate, which it skips when they are denied.
OPTIONAL = {("list", "", "nodes", ""), ("list", "", "pods", "")}
# What the Roles grant that these runs may not ask for, and what does.
NOT_ALWAYS_HERE = {
    "delete configmaps": "the migration Job's script (the last test)",
    "delete secrets": "the migration Job's URL (the last test); pruning an unused release Secret",
    # A server-side apply that creates the Deployment is a PATCH the API server also
    # authorizes as create (by the Deployment's name).
    "create apps/deployments": "the first apply of each color",
    # Only while a rollout or a switch is not done at the first look:
    "list apps/replicasets": "a rollout with pods still missing",
    "watch discovery.k8s.io/endpointslices": "a switch whose endpoints have not moved yet",
    "watch pods": "a rollout whose pods are not Ready yet",
    "watch coordination.k8s.io/leases": "a deploy waiting for another's lock (test_lock)",
}


def granted_by(docs: list[dict[str, Any]], namespace: str) -> tuple[rbac.Rule, ...]:
    """The rules of the generated Roles in ``namespace``, as they were applied."""
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == namespace]
    parsed = rbac.parse(yaml.safe_dump_all(roles), "bascule rbac")
    return tuple(rule for rules in parsed.values() for rule in rules)


def grant(
    cluster: Cluster, cfg: Path, environment: str, namespace: str
) -> tuple[Path, tuple[rbac.Rule, ...]]:
    """`bascule rbac ENV` applied, and `bascule kubeconfig ENV` written beside ``cfg`` (where
    write_envs was told it would be); the rules granted in ``namespace``."""
    docs = apply_rbac(cluster, cfg, environment)
    kubeconfig = env_kubeconfig(cluster, environment, namespace, cfg.parent)
    return kubeconfig, granted_by(docs, namespace)


def source_secret(cluster: Cluster, namespace: str, value: str) -> None:
    """The Kubernetes Secret a `kubernetes_secret:` source reads, as External Secrets would
    make it."""
    cluster.kubectl(
        *("-n", namespace, "create", "secret", "generic", SOURCE_SECRET),
        f"--from-literal=key={value}",
    )


def recorded(path: Path) -> set[rbac.Permission]:
    return {rbac.Permission(**json.loads(line)) for line in path.read_text().splitlines()}


def not_allowed(
    asked: set[rbac.Permission], granted: tuple[rbac.Rule, ...], namespace: str
) -> list[str]:
    """The requests the Roles, bound in ``namespace``, do not allow (beyond what every
    account may do, and the optional cluster-wide reads)."""
    return sorted(
        str(p)
        for p in asked
        if not (p.namespace == namespace and rbac.allows(granted, p))
        and (p.verb, p.group, p.resource) not in EVERYONE
        and (p.verb, p.group, p.resource, p.namespace) not in OPTIONAL
    )


def test_the_pipeline_runs_with_the_generated_roles_and_nothing_more(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "staging.kubeconfig"
    record = tmp_path / "requests.jsonl"
    env = {RECORD_ENV: str(record), SOURCE: "s3cr3t-rbac"}
    source_secret(cluster, namespace, "s3cr3t-from-kubernetes")
    over: dict[str, Any] = {"secrets": SECRETS}
    smoke = {
        "job": {
            "image": V1,
            "command": ["python3", "-m", "sampleapp.smoke"],
            "args": ["--url", "$(BASE_URL)", "--skip-items"],
            "timeout_seconds": 60,
        }
    }
    first = write_envs(
        tmp_path / "first", namespace, kubeconfig, {**over, "checks": {"smoke": smoke}}
    )
    # The run after the kill takes over the killed one's lock with the defaults.
    cfg = write_envs(tmp_path / "cfg", namespace, kubeconfig, over, ("staging",))
    kubeconfig, granted = grant(cluster, cfg, "staging", namespace)
    assert kubeconfig == tmp_path / "staging.kubeconfig"

    def run(*args: str) -> Any:
        res = deploys.run(prefect_server, *args, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    # A first deploy, with the smoke Job: the capacity estimate is skipped, not a failure.
    res = run("deploy", "--dir", str(first), "staging", "--image", V1)
    assert "no capacity estimate" in res.stdout + res.stderr
    # Killed the moment traffic moved, then run again: preflight reconciles, the new run
    # switches and scales the old color down.
    proc = deploys.start(
        prefect_server,
        *("deploy", "--dir", str(cfg), "staging", "--image", V2),
        log=tmp_path / "killed.log",
        env=env,
    )
    deploys.kill_at_switch(cluster, namespace, proc, "green")
    run("deploy", "--dir", str(cfg), "staging", "--image", V2)
    assert deploys.replicas(cluster, namespace, "blue") == 0
    run("rollback", "--dir", str(cfg), "staging")

    releases = deploys.history(cluster, namespace)
    assert [(r["kind"], r["image"], r["result"]) for r in releases] == [
        ("deploy", V1, "succeeded"),
        ("deploy", V2, "interrupted"),
        ("deploy", V2, "succeeded"),
        ("rollback", V1, "succeeded"),
    ]
    assert releases[1]["steps"][-1]["name"] == "reconciled"
    assert deploys.active_color(cluster, namespace) == "blue"

    asked = recorded(record)
    assert not_allowed(asked, granted, namespace) == []
    used = {str(unnamed(p)) for p in asked}
    unused = sorted(
        str(p)
        for p in {unnamed(p) for p in rbac.permissions(granted)}
        if str(p) not in used | NOT_ALWAYS_HERE.keys()
    )
    assert unused == [], f"the Roles grant what no run here asked for: {unused}"

    # The token is the namespace's, and nothing more: not even a list of its own Secrets.
    token = Kube(Target(str(kubeconfig)))
    for path in (
        "/api/v1/namespaces/default/secrets",
        "/api/v1/nodes",
        f"/api/v1/namespaces/{namespace}/secrets",
    ):
        with pytest.raises(KubeError) as denied:
            token.get(path)
        assert denied.value.status == 403, path


def unnamed(p: rbac.Permission) -> rbac.Permission:
    return rbac.Permission(p.verb, p.group, p.resource, p.subresource)


def test_preflight_names_what_a_narrower_role_lacks(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Against the cluster's RBAC: a Role without one of the generated rules, and no Secrets
    Role, is refused by name; the generated Roles pass; the promote-source Role, generated
    for another namespace and bound to this account, grants what it lists."""
    cfg = write_envs(
        tmp_path / "cfg",
        namespace,
        tmp_path / "staging.kubeconfig",
        {"secrets": SECRETS},
        ("staging",),
    )
    docs = rbac_documents(cfg, "staging")
    narrower = []
    for doc in docs:
        if doc["kind"] == "Role" and doc["metadata"]["name"] == "bascule-secrets":
            continue
        if doc["kind"] == "Role":
            for rule in doc["rules"]:
                if rule["resources"] == ["endpointslices"]:
                    rule["verbs"] = ["list"]
        narrower.append(doc)
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(narrower))
    kubeconfig = env_kubeconfig(cluster, "staging", namespace, tmp_path)
    env = Env.open("staging", cfg)
    assert env.cfg.kube.kubeconfig == kubeconfig
    assert preflight.permissions(env) == [
        "create secrets",
        "delete secrets",
        f"get secrets {SOURCE_SECRET}",
        "watch discovery.k8s.io/endpointslices",
    ]
    apply_rbac(cluster, cfg, "staging")
    assert preflight.permissions(env) == []

    source = f"{namespace}-source"
    cluster.create_namespace(source)
    try:
        names = rbac.values(env.cfg, env.workload)
        history = rbac.needed(preflight.definition(), ["promote-source"], source, names)
        assert preflight.missing(env, history, source) == [
            "get configmaps sample-app-bascule-history",
            "get services sample-app",
            "get services sample-app-preview",
        ]
        grants = [rbac.source_grant(env.cfg.model_copy(update={"namespace": source}), env.workload)]
        promote = rbac.environment_manifests("staging", namespace, shipped_roles(), grants)
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(promote))
        assert preflight.missing(env, history, source) == []
    finally:
        cluster.kubectl("delete", "namespace", source, "--wait=false", check=False)


def test_the_migration_job_runs_with_the_generated_roles(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job runner's Secret, ConfigMap, Job and log, as this account: one Job reading the
    database's revision (the upgrade Job asks for the same), in a namespace that enforces
    Pod Security `restricted`."""
    record = tmp_path / "requests.jsonl"
    with database(cluster) as db:
        monkeypatch.setenv(URL_VARIABLE, db.url(in_cluster=True))
        over = {"migrations": section(scripts(tmp_path), URL_VARIABLE, "job")}
        cfg = write_envs(
            tmp_path / "cfg", namespace, tmp_path / "staging.kubeconfig", over, ("staging",)
        )
        _, granted = grant(cluster, cfg, "staging", namespace)  # as the admin: not recorded
        monkeypatch.setenv(RECORD_ENV, str(record))
        env = Env.open("staging", cfg)
        assert preflight.permissions(env) == []
        assert migration_phase.current_in_job(env, V1, "rbac") is None  # a new, empty database

    asked = recorded(record)
    assert not_allowed(asked, granted, namespace) == []
    used = {str(p) for p in asked}
    assert {"create secrets", "delete secrets", "delete configmaps"} <= {
        str(unnamed(p)) for p in asked
    }, used
    assert any(str(p).startswith("get pods/log") for p in asked)


def test_a_dev_token_cannot_reach_production(
    cluster: Cluster, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacks a dev run can make with the credential it holds (dev's kubeconfig: a token
    of dev's ServiceAccount with dev's generated Roles), whatever its code: each refused by
    the real API server, by RBAC or by Pod Security admission. What dev's Roles do grant
    (its own source Secret, its own Services' proxy) answers, so the refusals are not a
    broken token's."""
    dev_ns, prod_ns = f"{namespace}-dev", f"{namespace}-production"
    for ns in (dev_ns, prod_ns):
        cluster.create_namespace(ns)
    try:
        cfg = write_envs(
            tmp_path / "cfg",
            namespace,
            tmp_path / "dev.kubeconfig",
            {"secrets": {"DB": {"kubernetes_secret": {"name": SOURCE_SECRET, "key": "key"}}}},
            ("dev", "production"),
        )
        apply_rbac(cluster, cfg, "production")
        apply_rbac(cluster, cfg, "dev")
        # As a user makes the worker's credential: `bascule kubeconfig`, with the admin's.
        kubeconfig = tmp_path / "dev.kubeconfig"
        admin = ["--admin-kubeconfig", str(cluster.kubeconfig), "--hours", "0.5"]
        made = main(["kubeconfig", "--dir", str(cfg), "dev", "--out", str(kubeconfig), *admin])
        said = capsys.readouterr().out
        assert made == 0 and f"ServiceAccount {dev_ns}/bascule (dev), valid until" in said
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        (user,) = yaml.safe_load(kubeconfig.read_text())["users"]
        assert user["user"]["token"] not in said
        for ns in (dev_ns, prod_ns):
            source_secret(cluster, ns, f"{ns}-database-password")
        cluster.kubectl("-n", dev_ns, "create", "secret", "generic", "other", "--from-literal=a=b")
        cluster.apply(dev_ns, sample.service("other"))
        dev = Kube(Target(str(kubeconfig)))

        def status(method: str, path: str, body: dict[str, Any] | None = None) -> int:
            try:
                if method == "GET":
                    dev.get(path)
                elif method == "POST":
                    dev.create(path, body or {})
                else:
                    dev.patch(path, body or {})
            except KubeError as exc:
                return exc.status
            return 200

        # The one credential dev's runs need: its own source Secret, by name.
        own = dev.get(k.secrets(dev_ns, SOURCE_SECRET))
        assert base64.b64decode(own["data"]["key"]).decode() == f"{dev_ns}-database-password"
        selector = {"spec": {"selector": {"bascule.io/color": "green"}}}
        refused = {
            # production's credentials and objects
            "get production's source Secret": ("GET", k.secrets(prod_ns, SOURCE_SECRET)),
            "list production's Secrets": ("GET", k.secrets(prod_ns)),
            "get production's Deployment": ("GET", k.deployments(prod_ns, "sample-app-blue")),
            "patch production's Deployment": (
                "PATCH",
                k.deployments(prod_ns, "sample-app-blue"),
                {"spec": {"replicas": 0}},
            ),
            "get production's Service": ("GET", k.services(prod_ns, "sample-app")),
            "patch production's Service": ("PATCH", k.services(prod_ns, "sample-app"), selector),
            "get production's history": (
                "GET",
                k.configmaps(prod_ns, "sample-app-bascule-history"),
            ),
            "patch production's history": (
                "PATCH",
                k.configmaps(prod_ns, "sample-app-bascule-history"),
                {"data": {"x": "y"}},
            ),
            "create a Job in production": ("POST", k.jobs(prod_ns), job("escalate")),
            "a token of production's account": (
                "POST",
                f"/api/v1/namespaces/{prod_ns}/serviceaccounts/bascule/token",
                {"spec": {}},
            ),
            # dev's own namespace: Secrets other than its sources, and RBAC itself
            "list dev's own Secrets": ("GET", k.secrets(dev_ns)),
            "get another Secret of dev": ("GET", k.secrets(dev_ns, "other")),
            "patch a Deployment not the app's": (
                "PATCH",
                k.deployments(dev_ns, "miner"),
                {"spec": {"replicas": 1}},
            ),
            "create a pod directly": ("POST", k.pods(dev_ns), {"metadata": {"name": "p"}}),
            "bind itself a Role": (
                "POST",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{dev_ns}/rolebindings",
                {"metadata": {"name": "more"}, "roleRef": {}, "subjects": []},
            ),
        }
        answers = {what: status(*request) for what, request in refused.items()}
        assert answers == dict.fromkeys(refused, 403), answers

        # The service proxy: dev's own app Services, with the methods its checks use (GET)
        # only; no other Service, here or elsewhere.
        def proxy(method: str, ns: str, service: str) -> int:
            path = f"/api/v1/namespaces/{ns}/services/{service}/proxy/"
            return dev.proxy(method, path, timeout=5)[0].status_code

        assert proxy("GET", dev_ns, "sample-app:http") != 403  # allowed (nothing serves yet)
        assert proxy("GET", dev_ns, "other:http") == 403
        assert proxy("POST", dev_ns, "sample-app:http") == 403
        assert proxy("GET", prod_ns, "sample-app:http") == 403
        assert proxy("GET", "default", "kubernetes:https") == 403

        # Pods dev may start through a Job it can create: Pod Security `restricted` refuses
        # a privileged one, and one as root, at the API server; a pod runs only as an
        # account of its own namespace, so not as one that exists in production's alone.
        cluster.kubectl("-n", prod_ns, "create", "serviceaccount", "prod-only")
        privileged = {"privileged": True}
        as_root = {**restricted_context(), "runAsNonRoot": False, "runAsUser": 0}
        attempts = {
            "privileged": (job("privileged", privileged), "violates PodSecurity"),
            "as-root": (job("as-root", as_root), "violates PodSecurity"),
            "prod-account": (
                job("prod-account", restricted_context(), account="prod-only"),
                'serviceaccount "prod-only" not found',
            ),
        }
        for body, _ in attempts.values():
            dev.create(k.jobs(dev_ns), body)
        for name, (_, reason) in attempts.items():
            refusal = wait_for(
                lambda name=name: pod_refusal(cluster, dev_ns, name), 30, what=f"{name}'s pod"
            )
            assert reason in refusal, refusal
            pods = cluster.get_json("-n", dev_ns, "pods", "-l", f"job-name={name}")["items"]
            assert pods == [], pods
        dev.close()
    finally:
        for ns in (dev_ns, prod_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def job(
    name: str, context: dict[str, Any] | None = None, account: str | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "x", "image": V1, "imagePullPolicy": "Never"}
    if context is not None:
        container["securityContext"] = context
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if account is not None:
        pod["serviceAccountName"] = account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod}},
    }


def pod_refusal(cluster: Cluster, namespace: str, job_name: str) -> str | None:
    """The message of the Job controller's FailedCreate event for ``job_name``, if any."""
    events = cluster.get_json(
        "-n", namespace, "events", "--field-selector", f"involvedObject.name={job_name}"
    )["items"]
    failed = [e["message"] for e in events if e["reason"] == "FailedCreate"]
    return failed[0] if failed else None
