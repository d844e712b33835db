"""Least privilege on the real cluster: the pipeline runs as the ServiceAccount of the Roles
shipped in deployments/rbac/, through a token bound to nothing else, with every API request
recorded: a first deploy with a smoke Job and secrets, a deploy killed at the switch and run
again (the reconcile, the old color's scale-down), a rollback, and a migration Job. Each
recorded request is one the Roles allow, each permission they grant was used (or is named
below with what uses it), and the token reads no Secret of another namespace and no node.
Preflight, against the cluster's RBAC, names what a narrower Role lacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule import rbac
from bascule.kube import RECORD_ENV, Kube, KubeError, Target
from tasks import migrate, preflight
from tasks.context import Env
from tasks.preflight import RBAC_DIR, definition
from tests.support import deploys
from tests.support.cluster import Cluster
from tests.support.envs import write_envs
from tests.support.migrations import URL_VARIABLE, scripts, section
from tests.support.postgres import database

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
ACCOUNT = "bascule"
SOURCE = "BASCULE_TEST_RBAC_TOKEN"  # the variable the app's secret comes from
# Granted to every authenticated user by Kubernetes' default ClusterRoles (system:basic-user).
EVERYONE = {
    ("create", "authorization.k8s.io", "selfsubjectrulesreviews"),
    ("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
}
# Cluster-wide reads of preflight's capacity estimate, which it skips when they are denied.
OPTIONAL = {("list", "", "nodes", ""), ("list", "", "pods", "")}
# What the Roles grant that these runs may not ask for, and what does.
NOT_ALWAYS_HERE = {
    "create services/proxy": "smoke scenarios with method POST",
    "update services/proxy": "smoke scenarios with method PUT",
    "patch services/proxy": "smoke scenarios with method PATCH",
    "delete services/proxy": "smoke scenarios with method DELETE",
    "delete configmaps": "the migration Job's script (the last test)",
    "delete secrets": "the migration Job's URL (the last test); pruning an unused release Secret",
    "get secrets": "a `kubernetes_secret:` source of `secrets:` (test_secrets)",
    # A server-side apply that creates the Deployment is a PATCH the API server also
    # authorizes as create.
    "create apps/deployments": "the first apply of each color",
    # Only while a rollout or a switch is not done at the first look:
    "list apps/replicasets": "a rollout with pods still missing",
    "watch discovery.k8s.io/endpointslices": "a switch whose endpoints have not moved yet",
    "watch pods": "a rollout whose pods are not Ready yet",
}


def token_kubeconfig(cluster: Cluster, ns: str, path: Path) -> Path:
    """A kubeconfig for the cluster whose only credential is a token of ``ns``'s Bascule
    ServiceAccount, from the TokenRequest API."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    answer = cluster.client().create(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{ACCOUNT}/token", request
    )
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"][:1],
        "users": [{"name": ACCOUNT, "user": {"token": answer["status"]["token"]}}],
        "contexts": [
            {
                "name": ACCOUNT,
                "context": {"cluster": admin["clusters"][0]["name"], "user": ACCOUNT},
            }
        ],
        "current-context": ACCOUNT,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


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


def test_the_pipeline_runs_with_the_shipped_roles_and_nothing_more(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    for name in ("deployer.yaml", "secrets.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(RBAC_DIR / name))
    kubeconfig = token_kubeconfig(cluster, namespace, tmp_path / "kubeconfig")
    record = tmp_path / "requests.jsonl"
    env = {RECORD_ENV: str(record), SOURCE: "s3cr3t-rbac"}
    over: dict[str, Any] = {"secrets": {"APP_TOKEN": {"env": SOURCE}}}
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

    granted = definition()["deploy"] + definition()["secrets"]
    asked = recorded(record)
    assert not_allowed(asked, granted, namespace) == []
    used = {str(rbac.Permission(p.verb, p.group, p.resource, p.subresource)) for p in asked}
    unused = sorted(
        str(p) for p in rbac.permissions(granted) if str(p) not in used | NOT_ALWAYS_HERE.keys()
    )
    assert unused == [], f"the Roles grant what no run here asked for: {unused}"

    # The token is the namespace's, and nothing more.
    token = Kube(Target(str(kubeconfig)))
    for path in ("/api/v1/namespaces/default/secrets", "/api/v1/nodes"):
        with pytest.raises(KubeError) as denied:
            token.get(path)
        assert denied.value.status == 403, path


def test_preflight_names_what_a_narrower_role_lacks(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Against the cluster's RBAC: a Role without one of the shipped rules, and no Secrets
    Role, is refused by name; the shipped Roles pass; the promote-source Role, applied in
    another namespace and bound to this account as the file says, grants what it lists."""
    shipped = (RBAC_DIR / "deployer.yaml").read_text()
    narrower = shipped.replace(
        "verbs: [list, watch]\n  # the history", "verbs: [list]\n  # the history"
    )
    assert narrower != shipped
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=narrower)
    kubeconfig = token_kubeconfig(cluster, namespace, tmp_path / "kubeconfig")
    over = {"secrets": {"APP_TOKEN": {"env": SOURCE}}}
    env = Env.open("staging", write_envs(tmp_path, namespace, kubeconfig, over, ("staging",)))
    assert preflight.permissions(env) == [
        "create secrets",
        "delete secrets",
        "get secrets",
        "list secrets",
        "watch discovery.k8s.io/endpointslices",
    ]
    for name in ("deployer.yaml", "secrets.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(RBAC_DIR / name))
    assert preflight.permissions(env) == []

    source = f"{namespace}-source"
    cluster.create_namespace(source)
    try:
        history = rbac.needed(preflight.definition(), ["promote-source"], source)
        assert preflight.missing(env, history, source) == ["get configmaps"]
        cluster.kubectl("apply", "-n", source, "-f", str(RBAC_DIR / "promote-source.yaml"))
        cluster.kubectl(
            *("create", "rolebinding", "bascule-promote-source", "-n", source),
            *("--role=bascule-promote-source", f"--serviceaccount={namespace}:{ACCOUNT}"),
        )
        assert preflight.missing(env, history, source) == []
    finally:
        cluster.kubectl("delete", "namespace", source, "--wait=false", check=False)


def test_the_migration_job_runs_with_the_shipped_roles(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job runner's Secret, ConfigMap, Job and log, as this account: one Job reading the
    database's revision (the upgrade Job asks for the same)."""
    for name in ("deployer.yaml", "secrets.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(RBAC_DIR / name))
    kubeconfig = token_kubeconfig(cluster, namespace, tmp_path / "kubeconfig")
    record = tmp_path / "requests.jsonl"
    with database(cluster) as db:
        monkeypatch.setenv(URL_VARIABLE, db.url(in_cluster=True))
        monkeypatch.setenv(RECORD_ENV, str(record))
        over = {"migrations": section(scripts(tmp_path), URL_VARIABLE, "job")}
        cfg = write_envs(tmp_path / "cfg", namespace, kubeconfig, over, ("staging",))
        env = Env.open("staging", cfg)
        assert preflight.permissions(env) == []
        assert migrate.current_in_job(env, V1, "rbac") is None  # a new, empty database

    asked = recorded(record)
    assert not_allowed(asked, definition()["deploy"] + definition()["secrets"], namespace) == []
    used = {str(p) for p in asked}
    assert {"create secrets", "delete secrets", "delete configmaps", "get pods/log"} <= used
