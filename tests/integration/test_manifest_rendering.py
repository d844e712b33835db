"""`manifests:` rendered by the real tools: a Kustomize overlay by the local cluster's kubectl,
a Helm chart by the helm scripts/build-helm.sh builds (the session builds both if this machine
has not yet). No cluster is talked to: rendering needs none."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bascule.config import ManifestsConfig
from bascule.manifest_sources import KUBECTL_ENV, KUSTOMIZE_FLAGS, render_manifests
from bascule.rendered import RenderedObject
from bascule.yamlsource import ConfigError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "manifests"
pytestmark = pytest.mark.usefixtures("rendering_tools")


@pytest.fixture(autouse=True)
def from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # messages show paths relative to the working directory


def render(path: Path, **given: Any) -> list[RenderedObject]:
    source = ManifestsConfig.model_validate({"path": path, **given})
    return render_manifests(source, release="shop", namespace="shop-dev")


def problems(path: Path, **given: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        render(path, **given)
    return [str(p) for p in info.value.problems]


def by_kind(objects: list[RenderedObject]) -> dict[str, RenderedObject]:
    return {o.kind: o for o in objects}


def test_a_kustomize_overlay_renders_its_base_and_its_own_objects() -> None:
    objects = render(FIXTURES / "kustomize" / "overlays" / "dev")
    kinds = by_kind(objects)
    assert sorted(kinds) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    assert len(objects) == 5
    deployment = kinds["Deployment"].data
    assert deployment["spec"]["replicas"] == 3, "the overlay's patch"
    settings = kinds["ConfigMap"].name
    assert settings.startswith("shop-settings-"), "the generator's hashed name"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": settings}}]
    assert all(o.data["metadata"]["labels"] == {"team": "checkout"} for o in objects)
    assert kinds["HorizontalPodAutoscaler"].data["spec"]["scaleTargetRef"]["name"] == "shop"
    assert kinds["PodDisruptionBudget"].origin == (
        "kustomization tests/fixtures/manifests/kustomize/overlays/dev: PodDisruptionBudget shop"
    )


def test_a_helm_chart_renders_with_the_environments_values() -> None:
    chart = FIXTURES / "helm" / "chart"
    objects = render(chart, values=[FIXTURES / "helm" / "values-dev.yaml"])
    kinds = by_kind(objects)
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Service"], "no helm test hook"
    assert len(objects) == 3
    settings = kinds["ConfigMap"]
    assert settings.data["data"] == {"greeting.txt": "hello from dev"}
    assert settings.name == "shop-settings"
    assert settings.origin == (
        "helm chart tests/fixtures/manifests/helm/chart: shop/templates/configmap.yaml"
    )
    deployment = kinds["Deployment"].data
    assert deployment["metadata"] == {"name": "shop", "namespace": "shop-dev"}
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "settings", "configMap": {"name": "shop-settings"}}]
    # The chart's own values when the environment gives none; another release name.
    source = ManifestsConfig(path=chart, release="web")
    plain = by_kind(render_manifests(source, release="web", namespace="n"))
    assert plain["ConfigMap"].data["data"] == {"greeting.txt": "hello"}
    assert plain["ConfigMap"].name == "web-settings"


def test_a_failing_chart_is_a_problem_naming_the_template(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir(parents=True)
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (tmp_path / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        '  name: {{ required "set greeting in your values" .Values.greeting }}\n'
    )
    [found] = problems(tmp_path)
    assert found.startswith(f"{tmp_path}: helm template failed (exit 1): ")
    assert "broken/templates/cm.yaml:4" in found and "set greeting in your values" in found
    assert found.endswith("— fix the chart or its values")


def test_a_failing_kustomization_is_a_problem_with_kustomizes_message(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - service.yaml\n")
    (tmp_path / "service.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {}\n")
    [found] = problems(tmp_path)
    assert found.startswith(f"{tmp_path}: kubectl kustomize failed (exit 1): ")
    assert found.endswith("— fix the kustomization")


@pytest.mark.parametrize("refused", ["remote-base", "exec-plugin"])
def test_a_remote_base_and_an_exec_plugin_are_refused(refused: str) -> None:
    [found] = problems(FIXTURES / "refused" / refused)
    at = f"tests/fixtures/manifests/refused/{refused}/kustomization.yaml"
    expected = {
        "remote-base": f"{at}:5:5: resources[1]: 'https://github.com/example/shop//deploy/",
        "exec-plugin": f"{at}:6:5: generators[0]: make-secret.yaml: a KRM function",
    }
    assert found.startswith(expected[refused])


def test_kustomize_itself_runs_no_plugin_with_bascules_flags(rendering_tools: dict) -> None:
    # Were Bascule's own check to miss one, kustomize with these flags would not run it.
    argv = [rendering_tools[KUBECTL_ENV], "kustomize", str(FIXTURES / "refused" / "exec-plugin")]
    done = subprocess.run(
        [*argv, *KUSTOMIZE_FLAGS], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "external plugins disabled" in done.stderr
