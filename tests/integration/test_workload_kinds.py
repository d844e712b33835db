"""An app with more than a Deployment and a Service, on the real cluster with a real Prefect
server: a plain manifests directory with an HPA, a PDB, an Ingress and a ConfigMap the pods
mount, deployed as the environment's ServiceAccount with the Roles `bascule rbac` generates
for it. The HPA keeps its count through a deploy (the idle color starts at the active
color's) and each color has its own PDB and HPA; a changed file is a new ConfigMap, and a
rollback whose color is gone serves v1's file again; a Service port change reaches both
Services, and the rollback takes it back; every request is one the generated Roles allow,
and their rules for these kinds are used. A release whose pods listen on another port gets
its Service back on a rollback to it, by switch or by redeploy, and a rollback from it gives
the old pods theirs. A refused kind (a StatefulSet) fails `validate` and `deploy` with its
origin and why, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule.kube import RECORD_ENV
from tests.integration.test_abort import serving
from tests.integration.test_rbac import granted_by, not_allowed, recorded
from tests.support import deploys
from tests.support.access import apply_rbac, env_kubeconfig
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs
from tests.support.sample import DISRUPTION_BUDGET, autoscaler

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
APP = "sample-app"
MOUNT = "/etc/app"
HPA_MIN, HPA_MAX = 2, 4
SCALED = 3  # what the HPA (here: a `kubectl scale`, as it would) made of the active color


def manifests(cfg: Path, message: str, port: int = 80) -> None:
    """The plain directory write_envs copied, plus an HPA, a PDB and a ConfigMap the app's
    pods mount (holding ``message``); the Service on ``port``."""
    directory = cfg / "manifests"
    deployment = yaml.safe_load((directory / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    pod["metadata"]["labels"] = {"tier": "web"}
    pod["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "settings"}}]
    container = pod["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "settings", "mountPath": MOUNT, "readOnly": True}]
    (directory / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    service = yaml.safe_load((directory / "service.yaml").read_text())
    service["spec"]["ports"][0]["port"] = port
    (directory / "service.yaml").write_text(yaml.safe_dump(service))
    hpa = autoscaler(HPA_MIN, HPA_MAX)
    utilization = {"type": "Utilization", "averageUtilization": 80}
    hpa["spec"]["metrics"] = [
        {"type": "Resource", "resource": {"name": "cpu", "target": utilization}}
    ]
    (directory / "hpa.yaml").write_text(yaml.safe_dump(hpa))
    (directory / "pdb.yaml").write_text(yaml.safe_dump(DISRUPTION_BUDGET))
    (directory / "ingress.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "web"},
                "spec": {"defaultBackend": {"service": {"name": APP, "port": {"name": "http"}}}},
            }
        )
    )
    (directory / "settings.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"message": message},
            }
        )
    )


def deploy(api: str, cfg: Path, image: str, env: dict[str, str] | None = None) -> Any:
    res = deploys.run(api, "deploy", "--dir", str(cfg), "staging", "--image", image, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def files(cluster: Cluster, ns: str, color: str) -> set[str]:
    """The mounted message as each running pod of ``color`` reads it."""
    names = cluster.kubectl(
        *("-n", ns, "get", "pods", "-l", f"bascule.io/color={color}"),
        *("--field-selector=status.phase=Running", "-o", "name"),
    ).split()
    code = f"print(open('{MOUNT}/message').read())"
    out = set()
    for name in names:
        found = cluster.kubectl("-n", ns, "exec", name, "--", "python3", "-c", code, check=False)
        out.add(found.strip())
    return out


def named(cluster: Cluster, ns: str, kind: str, label: str) -> dict[str, Any]:
    """The objects of ``kind`` with ``label``, by name."""
    listing = cluster.get_json("-n", ns, kind, "-l", label)
    return {o["metadata"]["name"]: o for o in listing["items"]}


def assert_an_hpa_per_color(cluster: Cluster, ns: str) -> None:
    """Each color has the app's HPA, aimed at its own Deployment."""
    hpas = named(cluster, ns, "hpa", f"app.kubernetes.io/name={APP}")
    assert {n: h["spec"]["scaleTargetRef"]["name"] for n, h in hpas.items()} == {
        f"{APP}-{color}": f"{APP}-{color}" for color in ("blue", "green")
    }


def test_hpa_pdb_mounted_configmap_and_service_ports_through_deploys_and_a_rollback(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    token = tmp_path / "staging.kubeconfig"
    record = tmp_path / "requests.jsonl"
    as_account = {RECORD_ENV: str(record)}
    cfg = write_envs(tmp_path / "cfg", namespace, token, {}, ("staging",))
    manifests(cfg, "hello from v1")
    docs = apply_rbac(cluster, cfg, "staging")
    assert env_kubeconfig(cluster, "staging", namespace, tmp_path) == token
    deploy(prefect_server, cfg, V1, as_account)
    assert deploys.active_color(cluster, namespace) == "blue"
    assert wait_for(lambda: files(cluster, namespace, "blue") == {"hello from v1"}, 30)
    # The HPA's doing, which no deploy takes back: blue scaled within its bounds.
    cluster.kubectl("-n", namespace, "scale", f"deployment/{APP}-blue", f"--replicas={SCALED}")

    cfg2 = write_envs(tmp_path / "cfg2", namespace, token, {}, ("staging",))
    manifests(cfg2, "hello from v2", port=8081)
    deploy(prefect_server, cfg2, V2, as_account)

    # (a) green started at blue's count, which its own HPA keeps; each color has its PDB.
    assert deploys.active_color(cluster, namespace) == "green"
    assert deploys.replicas(cluster, namespace, "green") == SCALED
    assert_an_hpa_per_color(cluster, namespace)
    pdbs = named(cluster, namespace, "pdb", f"app.kubernetes.io/name={APP}")
    assert {
        n: p["spec"]["selector"]["matchLabels"]["bascule.io/color"] for n, p in pdbs.items()
    } == {
        f"{APP}-blue": "blue",
        f"{APP}-green": "green",
    }
    green = cluster.get_json("-n", namespace, "deployment", f"{APP}-green", "--show-managed-fields")
    managers = {
        m["manager"]
        for m in green["metadata"]["managedFields"]
        if "f:replicas" in json.dumps(m.get("fieldsV1", {})) and m["operation"] == "Apply"
    }
    assert managers == set(), "no apply owns replicas: the HPA does"
    # (c) the new port on both Services.
    for service in (APP, f"{APP}-preview"):
        ports = cluster.get_json("-n", namespace, "service", service)["spec"]["ports"]
        assert [p["port"] for p in ports] == [8081], service
    # (b) green reads v2's file from a ConfigMap of its own; v1's is kept for its release.
    assert wait_for(lambda: files(cluster, namespace, "green") == {"hello from v2"}, 30)
    settings = named(cluster, namespace, "configmap", "bascule.io/release-config=true")
    assert len(settings) == 2 and all(cm.get("immutable") for cm in settings.values())
    assert deploys.replicas(cluster, namespace, "blue") == 0

    res = deploys.run(prefect_server, "rollback", "--dir", str(cfg2), "staging", env=as_account)
    assert res.returncode == 0, res.stdout + res.stderr

    assert deploys.active_color(cluster, namespace) == "blue"
    assert wait_for(lambda: files(cluster, namespace, "blue") == {"hello from v1"}, 60)
    for service in (APP, f"{APP}-preview"):  # v1's port again, from its stored Service
        ports = cluster.get_json("-n", namespace, "service", service)["spec"]["ports"]
        assert [p["port"] for p in ports] == [80], service
    ingress = cluster.get_json("-n", namespace, "ingress", "web")
    assert ingress["metadata"]["labels"]["app.kubernetes.io/name"] == APP

    # As the account: every request allowed, and the rules of these kinds used, by name.
    granted = granted_by(docs, namespace)
    asked = recorded(record)
    assert not_allowed(asked, granted, namespace) == []
    kinds = {
        str(p)
        for p in asked
        if p.resource in ("horizontalpodautoscalers", "poddisruptionbudgets", "ingresses")
    }
    assert kinds == {
        f"patch autoscaling/horizontalpodautoscalers {APP}-blue",
        f"patch autoscaling/horizontalpodautoscalers {APP}-green",
        f"patch policy/poddisruptionbudgets {APP}-blue",
        f"patch policy/poddisruptionbudgets {APP}-green",
        "patch networking.k8s.io/ingresses web",
    }


def listening_on(cfg: Path, port: int) -> None:
    """The app's pods listen on ``port`` (the sample app's PORT), where its Service sends."""
    directory = cfg / "manifests"
    deployment = yaml.safe_load((directory / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [*container.get("env", []), {"name": "PORT", "value": str(port)}]
    container["ports"][0]["containerPort"] = port  # the probes' named port
    (directory / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    service = yaml.safe_load((directory / "service.yaml").read_text())
    service["spec"]["ports"][0]["targetPort"] = port
    (directory / "service.yaml").write_text(yaml.safe_dump(service))


def target_ports(cluster: Cluster, ns: str) -> dict[str, list[Any]]:
    """The active and preview Services' target ports."""
    return {
        name: [
            p["targetPort"] for p in cluster.get_json("-n", ns, "service", name)["spec"]["ports"]
        ]
        for name in (APP, f"{APP}-preview")
    }


def test_a_rollback_brings_back_the_service_its_release_serves_on(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    """v2's pods listen on 9090, v1's on 8080. A rollback while v1 still runs switches back
    with v1's Service in the same PATCH; a rollback to v2 once its color is gone redeploys it
    with v2's Service, though the configuration it runs with is v1's."""
    cfg1 = write_envs(tmp_path / "cfg1", namespace, cluster.kubeconfig, {}, ("staging",))
    # v1 kept at full size after the switch to v2 (its deploy waits that long, then is killed).
    kept = {"rollout": {"scale_down_delay_seconds": 600}}
    cfg2 = write_envs(tmp_path / "cfg2", namespace, cluster.kubeconfig, kept, ("staging",))
    listening_on(cfg2, 9090)
    deploy(prefect_server, cfg1, V1)
    args = ("deploy", "--dir", str(cfg2), "staging", "--image", V2)
    proc = deploys.start(prefect_server, *args, log=tmp_path / "v2.log")
    try:
        v2 = deploys.wait_phase(cluster, namespace, V2, {"done"})
    finally:
        deploys.kill(proc)
    assert v2["result"] == "succeeded", v2
    assert target_ports(cluster, namespace) == {APP: [9090], f"{APP}-preview": [9090]}
    assert wait_for(lambda: serving(cluster, namespace) == "v2", 30)

    res = deploys.run(prefect_server, "rollback", "--dir", str(cfg2), "staging")

    assert res.returncode == 0, res.stdout + res.stderr
    back = deploys.history(cluster, namespace)[-1]
    names = [s["name"] for s in back["steps"]]
    assert "switch" in names and "deploy-idle-color" not in names, names  # v1's own pods
    assert target_ports(cluster, namespace)[APP] == [8080]
    assert wait_for(lambda: serving(cluster, namespace) == "v1", 30)

    res = deploys.run(prefect_server, "rollback", "--dir", str(cfg1), "staging", "--to", v2["id"])

    assert res.returncode == 0, res.stdout + res.stderr
    again = deploys.history(cluster, namespace)[-1]
    assert "deploy-idle-color" in [s["name"] for s in again["steps"]], again["steps"]
    assert target_ports(cluster, namespace) == {APP: [9090], f"{APP}-preview": [9090]}
    assert wait_for(lambda: serving(cluster, namespace) == "v2", 30)


REFUSED = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {"name": "db"},
    "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}},
}


def test_a_refused_kind_fails_validate_and_deploy_and_changes_nothing(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    cfg = write_envs(tmp_path / "cfg", namespace, cluster.kubeconfig, {}, ("staging",))
    (cfg / "manifests" / "db.yaml").write_text("# the app's database\n" + yaml.safe_dump(REFUSED))
    said = "db.yaml:2:1: StatefulSet db is refused: its pods keep identities and volumes"
    before = cluster.kubectl("-n", namespace, "get", "all,configmaps,pdb,hpa", "-o", "name")

    checked = deploys.run(prefect_server, "validate", "--dir", str(cfg), "staging")
    res = deploys.run(prefect_server, "deploy", "--dir", str(cfg), "staging", "--image", V1)

    assert checked.returncode == 2 and said in checked.stdout, checked.stdout + checked.stderr
    assert res.returncode == 2 and said in res.stdout + res.stderr, res.stdout + res.stderr
    after = cluster.kubectl("-n", namespace, "get", "all,configmaps,pdb,hpa", "-o", "name")
    assert after == before
