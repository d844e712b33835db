"""Sorting the rendered objects by how Bascule runs them blue-green (bascule.workload), and
rendering each per color, per release or once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule import workload as w
from bascule.config import EnvironmentConfig, ManifestsConfig
from bascule.config.workload import WorkloadConfig
from bascule.config_files import load_environment, load_templates
from bascule.manifest_sources import render_environment, render_manifests
from bascule.manifests import LABEL_COLOR, LABEL_NAME, applied_image
from bascule.rendered import RenderedObject
from bascule.yamlsource import ConfigError

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
IMAGE = "bascule.local/sample-app:v2"
POD_LABELS = {"app": "shop"}


@pytest.fixture(scope="module")
def cfg() -> EnvironmentConfig:
    return load_environment(DEPLOYMENTS / "staging.yaml")


def deployment(name: str = "shop", **pod: Any) -> dict[str, Any]:
    containers = [
        {"name": "app", "image": "x", "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}]},
        {"name": "proxy", "image": "envoy:1.30"},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"labels": POD_LABELS},
                "spec": {
                    "containers": containers,
                    "volumes": [{"name": "conf", "configMap": {"name": "settings"}}],
                    **pod,
                },
            },
        },
    }


def obj(kind: str, name: str, api: str = "v1", **rest: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, **rest}


SERVICE = obj("Service", "shop", spec={"ports": [{"name": "http", "port": 80}]})
HPA = obj(
    "HorizontalPodAutoscaler",
    "shop",
    "autoscaling/v2",
    spec={
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
        "minReplicas": 2,
        "maxReplicas": 6,
    },
)
PDB = obj(
    "PodDisruptionBudget",
    "shop",
    "policy/v1",
    spec={"maxUnavailable": 1, "selector": {"matchLabels": POD_LABELS}},
)
SETTINGS = obj("ConfigMap", "settings", data={"message": "v1"})
INGRESS = obj("Ingress", "shop", "networking.k8s.io/v1", spec={"rules": []})
UNREAD = obj("ConfigMap", "dashboards", data={"a": "b"})


def rendered(*objects: dict[str, Any]) -> list[RenderedObject]:
    return [RenderedObject(o, f"manifests/{i}.yaml:{i + 1}") for i, o in enumerate(objects)]


def full() -> list[RenderedObject]:
    return rendered(deployment(), SERVICE, HPA, PDB, SETTINGS, INGRESS, UNREAD)


def refusals(objects: list[RenderedObject], **choice: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        w.classify(objects, WorkloadConfig(**choice), "shop-ns", "deployments/shop.yaml")
    return [str(p) for p in exc.value.problems]


def test_each_kind_is_sorted_by_how_it_runs() -> None:
    found = w.classify(full(), WorkloadConfig(), "shop-ns")

    assert [(w.described(o), how) for o, how in found.managed()] == [
        ("Deployment shop", "workload"),
        ("Service shop", "service"),
        ("HorizontalPodAutoscaler shop", "per color"),
        ("PodDisruptionBudget shop", "per color"),
        ("ConfigMap settings", "per release"),
        ("Ingress shop", "shared"),
        ("ConfigMap dashboards", "shared"),
    ]


def test_refused_kinds_are_named_with_their_origin_and_why() -> None:
    objects = rendered(
        deployment(),
        SERVICE,
        obj("StatefulSet", "db", "apps/v1"),
        obj("CronJob", "nightly", "batch/v1"),
        obj("ClusterRole", "reader", "rbac.authorization.k8s.io/v1"),
        obj("Widget", "w", "example.com/v1"),
        deployment("worker"),
    )

    problems = refusals(objects, deployment="shop")

    assert len(problems) == 5
    assert problems[0].startswith("manifests/2.yaml:3:1: StatefulSet db is refused: its pods")
    assert "CronJob nightly is refused" in problems[1]
    assert "ClusterRole reader is refused: it is cluster-scoped" in problems[2]
    assert "Widget w is refused: Bascule does not know how to run this kind" in problems[3]
    assert problems[4].startswith("manifests/6.yaml:7:1: Deployment worker is refused: a second")


def test_two_deployments_without_a_choice_name_the_key_to_set() -> None:
    problems = refusals(rendered(deployment(), deployment("worker"), SERVICE))

    assert problems == [
        "manifests/0.yaml:1:1: one of 2 Deployments (shop, worker): name the app's in "
        "`workload.deployment`",
        "manifests/1.yaml:2:1: one of 2 Deployments (shop, worker): name the app's in "
        "`workload.deployment`",
    ]
    assert refusals(rendered(deployment(), SERVICE), deployment="nope") == [
        "deployments/shop.yaml: workload.deployment: no Deployment named nope among the "
        "manifests (shop) — name one of them"
    ]


def test_an_hpa_or_pdb_not_aimed_at_the_workload_is_refused() -> None:
    stray_hpa = copy.deepcopy(HPA)
    stray_hpa["metadata"]["name"] = "stray"
    stray_hpa["spec"]["scaleTargetRef"]["name"] = "other"
    stray_pdb = copy.deepcopy(PDB)
    stray_pdb["metadata"]["name"] = "stray"
    stray_pdb["spec"]["selector"] = {"matchLabels": {"app": "other"}}

    problems = refusals(rendered(deployment(), SERVICE, stray_hpa, stray_pdb, HPA | {}))

    assert "scaleTargetRef is not Deployment shop" in problems[0]
    assert "do not select the workload's pods" in problems[1]
    assert len(problems) == 2  # the third, aimed right, is the one HPA


def test_a_second_hpa_and_an_object_of_another_namespace_are_refused() -> None:
    second = copy.deepcopy(HPA)
    second["metadata"]["name"] = "shop-2"
    elsewhere = copy.deepcopy(INGRESS)
    elsewhere["metadata"]["namespace"] = "other-ns"

    problems = refusals(rendered(deployment(), SERVICE, HPA, second, elsewhere))

    assert len(problems) == 2
    assert "is in namespace other-ns, not the environment's shop-ns" in problems[0]
    assert problems[1].startswith(
        "manifests/3.yaml:4:1: HorizontalPodAutoscaler shop-2 is refused: a second "
        "HorizontalPodAutoscaler for the workload (the first is at manifests/2.yaml:3)"
    )


def test_an_unknown_container_is_named() -> None:
    problems = refusals(rendered(deployment(), SERVICE), container="web")

    assert problems == [
        "deployments/shop.yaml: workload.container: Deployment shop has no container web "
        "(app, proxy) — name one of them"
    ]


def test_per_color_objects_aim_at_their_color(cfg: EnvironmentConfig) -> None:
    found = w.classify(full(), WorkloadConfig(), cfg.namespace)
    assert found.autoscaler is not None and found.disruption_budget is not None

    hpa = w.render_per_color(cfg, found.autoscaler.data, "green")
    pdb = w.render_per_color(cfg, found.disruption_budget.data, "blue")

    assert hpa["metadata"]["name"] == f"{cfg.app}-green"
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{cfg.app}-green"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["metadata"]["labels"][LABEL_COLOR] == "green"
    assert pdb["metadata"]["name"] == f"{cfg.app}-blue"
    assert pdb["spec"]["selector"] == {"matchLabels": {LABEL_NAME: cfg.app, LABEL_COLOR: "blue"}}
    assert pdb["spec"]["maxUnavailable"] == 1
    assert w.path(cfg.namespace, pdb) == (
        f"/apis/policy/v1/namespaces/{cfg.namespace}/poddisruptionbudgets/{cfg.app}-blue"
    )


def test_a_referenced_configmap_is_renamed_by_its_content(cfg: EnvironmentConfig) -> None:
    found = w.classify(full(), WorkloadConfig(), cfg.namespace)
    (cm,) = w.render_config_maps(cfg, found)
    changed = copy.deepcopy(SETTINGS)
    changed["data"]["message"] = "v2"
    v2 = w.classify(rendered(deployment(), SERVICE, changed), WorkloadConfig(), cfg.namespace)
    (cm2,) = w.render_config_maps(cfg, v2)

    assert cm["metadata"]["name"].startswith("settings-") and cm["immutable"] is True
    assert len(cm["metadata"]["name"]) == len("settings-") + w.CONFIG_HASH_LENGTH
    assert cm2["metadata"]["name"] != cm["metadata"]["name"]
    assert cm["metadata"]["labels"][w.LABEL_RELEASE_CONFIG] == "true"

    dep = w.render_color(cfg, found, color="blue", image=IMAGE, release_id="r1")

    volume = dep["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert w.config_refs(dep) == {cm["metadata"]["name"]}
    assert found.deployment.data["spec"]["template"]["spec"]["volumes"][0] == {
        "name": "conf",
        "configMap": {"name": "settings"},  # the manifests' own objects are never changed
    }


def test_every_kind_of_configmap_reference_is_rewritten() -> None:
    env_ref = {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}
    pod = deployment(
        initContainers=[{"name": "init", "envFrom": [{"configMapRef": {"name": "settings"}}]}]
    )
    pod["spec"]["template"]["spec"]["containers"][0]["env"] = [env_ref]
    pod["spec"]["template"]["spec"]["volumes"].append(
        {"name": "all", "projected": {"sources": [{"configMap": {"name": "settings"}}]}}
    )

    out = w.with_config_names(copy.deepcopy(pod), {"settings": "settings-abc"})

    spec = out["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["envFrom"][0]["configMapRef"]["name"] == "settings-abc"
    assert spec["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == (
        "settings-abc"
    )
    assert spec["volumes"][1]["projected"]["sources"][0]["configMap"]["name"] == "settings-abc"
    assert w.config_refs(pod) == {"settings"}


def test_under_an_hpa_no_replicas_are_applied_and_the_idle_starts_at_the_active_count(
    cfg: EnvironmentConfig,
) -> None:
    with_hpa = w.classify(full(), WorkloadConfig(), cfg.namespace)
    without = w.classify(rendered(deployment(), SERVICE), WorkloadConfig(), cfg.namespace)

    assert (
        "replicas"
        not in w.render_color(cfg, with_hpa, color="green", image=IMAGE, release_id="r1")["spec"]
    )
    assert w.render_color(cfg, without, color="green", image=IMAGE, release_id="r1")["spec"][
        "replicas"
    ] == (cfg.replicas)
    assert w.start_replicas(5, 2, HPA) == 5
    assert w.start_replicas(9, 2, HPA) == 6  # within the HPA's bounds
    assert w.start_replicas(None, 1, HPA) == 2  # before any: the configured, at least min


def test_the_image_goes_to_the_named_container_only(cfg: EnvironmentConfig) -> None:
    named = cfg.model_copy(update={"workload": WorkloadConfig(container="app")})
    sidecar_first = deployment()
    containers = sidecar_first["spec"]["template"]["spec"]["containers"]
    containers.reverse()
    found = w.classify(rendered(sidecar_first, SERVICE), named.workload, cfg.namespace)

    dep = w.render_color(named, found, color="blue", image=IMAGE, release_id="r1")

    by_name = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
    assert by_name["app"]["image"] == IMAGE and by_name["proxy"]["image"] == "envoy:1.30"
    assert [e["name"] for e in by_name["app"].get("env", [])] == list(cfg.env)
    assert "env" not in by_name["proxy"]
    assert applied_image(dep) == IMAGE


def test_validate_reports_every_object_and_how(cfg: EnvironmentConfig) -> None:
    found = w.classify(full(), WorkloadConfig(), cfg.namespace)
    names = w.renames(cfg, found)

    lines = w.report(cfg, found)

    assert lines[0] == (
        f"Deployment shop (manifests/0.yaml:1): workload — one Deployment per color, "
        f"{cfg.app}-blue and {cfg.app}-green"
    )
    assert lines[4] == (
        f"ConfigMap settings (manifests/4.yaml:5): per release — immutable, as {names['settings']}"
    )
    assert lines[6].endswith("shared — once, shared by both colors")
    assert len(lines) == 7


def test_the_shipped_templates_are_a_workload_and_its_service(cfg: EnvironmentConfig) -> None:
    objects = render_environment(cfg)
    found = w.classify(objects, cfg.workload, cfg.namespace)

    assert found.templates == load_templates(cfg.manifests)
    assert [how for _, how in found.managed()] == ["workload", "service"]


def test_a_directory_with_more_files_is_read_whole(tmp_path: Path) -> None:
    for name in ("deployment.yaml", "service.yaml"):
        (tmp_path / name).write_text((DEPLOYMENTS / "manifests" / name).read_text())
    text = yaml.safe_dump_all([HPA, SETTINGS])
    (tmp_path / "extra.yaml").write_text(text)

    objects = render_manifests(ManifestsConfig(path=tmp_path), release="app", namespace="ns")

    # Files in name order, a file's documents in theirs (as `kubectl apply -f DIR`).
    assert [o.data["kind"] for o in objects] == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Service",
    ]
    second = text.splitlines().index("---") + 2  # the line after the separator
    assert objects[2].origin == f"{tmp_path}/extra.yaml:{second}"


def test_a_colors_per_color_objects_its_release_no_longer_has_are_stale() -> None:
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"}}
    pdb = {"kind": "PodDisruptionBudget", "metadata": {"name": "web"}}
    hpa_path = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/shop-blue"
    pdb_path = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/shop-blue"
    assert w.stale_per_color("ns", "shop", "blue", []) == [hpa_path, pdb_path]
    assert w.stale_per_color("ns", "shop", "blue", [pdb]) == [hpa_path]
    assert w.stale_per_color("ns", "shop", "blue", [hpa, pdb]) == []
    assert w.stale_per_color("ns", "shop", "green", [hpa]) == [pdb_path.replace("blue", "green")]
