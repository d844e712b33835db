"""The tests' Prometheus: its configuration passes Debian's promtool, and the pod discovery
gives the targets and labels that ``kubernetes_sd_configs`` (role pod) gives."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.podsd import target_groups
from tests.support.prometheus import scrape_config


def test_the_configuration_passes_promtool(tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(scrape_config("http://127.0.0.1:1/")))
    res = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_pods_become_targets_with_their_labels_and_annotations() -> None:
    pod = {
        "metadata": {
            "name": "web-green-1",
            "namespace": "shop",
            "uid": "u1",
            "labels": {"app.kubernetes.io/name": "web", "bascule.io/color": "green"},
            "annotations": {"prometheus.io/scrape": "true"},
        },
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {
            "podIP": "10.0.0.7",
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    starting = {"metadata": {"name": "x", "namespace": "shop"}, "status": {"phase": "Pending"}}
    [group] = target_groups([pod, starting])  # no IP yet: nothing to scrape
    assert group["targets"] == ["10.0.0.7:8080"]
    labels = group["labels"]
    assert labels["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == "web"
    assert labels["__meta_kubernetes_pod_label_bascule_io_color"] == "green"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_container_port_number"] == "8080"
    assert (labels["__meta_kubernetes_namespace"], labels["__meta_kubernetes_pod_ready"]) == (
        "shop",
        "true",
    )
