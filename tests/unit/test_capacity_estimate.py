"""The preflight's capacity estimate counts the pods the idle color will start with: the
configured count, or under an HPA the active color's (tasks/preflight.fits), on the fake
cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.logging import disable_run_logger

from bascule.manifests import selector
from bascule.tasks.preflight import fits
from tests.support.inprocess import APP, NAMESPACE, World, use
from tests.support.sample import autoscaler

ACTIVE_PODS = 5
# Room for four more of the sample app's pods (50m of cpu each) beside the active color's.
NODE = {
    "metadata": {"name": "n1"},
    "status": {
        "allocatable": {"cpu": "450m", "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def pod(index: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"blue-{index}",
            "namespace": NAMESPACE,
            "labels": selector(APP, "blue"),
        },
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "50m"}}}],
        },
        "status": {"phase": "Running"},
    }


def cluster_reads(request: httpx.Request) -> httpx.Response | None:
    if request.url.path == "/api/v1/nodes":
        return httpx.Response(200, json={"items": [NODE]})
    if request.url.path == "/api/v1/pods":
        return httpx.Response(200, json={"items": [pod(i) for i in range(ACTIVE_PODS)]})
    return None


@pytest.mark.parametrize(("hpa", "starts", "fit"), [(False, 2, True), (True, ACTIVE_PODS, False)])
def test_the_estimate_counts_the_pods_the_idle_color_starts_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hpa: bool, starts: int, fit: bool
) -> None:
    world = use(World.make(tmp_path), monkeypatch)
    world.configure({"replicas": 2})
    if hpa:
        (world.config_dir / "manifests" / "hpa.yaml").write_text(yaml.safe_dump(autoscaler(1, 10)))
    world.api.handlers.append(cluster_reads)
    with disable_run_logger():
        result = fits(world.env(), "green")
    assert result is not None
    assert result.passed is fit and f"{starts} new pods (" in result.detail, result.detail
