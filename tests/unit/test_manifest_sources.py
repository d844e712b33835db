"""Rendering `manifests:` without the real tools: a plain directory, every refusal (nothing is
run), the tools' discovery and their failures. tests/integration/test_manifest_rendering.py
renders with the real kubectl and helm."""

from __future__ import annotations

from pathlib import Path

import pytest

from bascule.config import ManifestsConfig
from bascule.errors import UsageError
from bascule.manifest_sources import (
    HELM_ENV,
    KUBECTL_ENV,
    app_root,
    render_manifests,
    source_kind,
)
from bascule.yamlsource import ConfigError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "manifests"


@pytest.fixture(autouse=True)
def from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # messages show paths relative to the working directory


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubectl and a helm that record each run and fail; returns the record."""
    record = tmp_path / "ran"
    script = tmp_path / "tool"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\necho "it broke" >&2\nexit 3\n')
    script.chmod(0o755)
    monkeypatch.setenv(KUBECTL_ENV, str(script))
    monkeypatch.setenv(HELM_ENV, str(script))
    return record


def render(path: Path, **given: object) -> list[tuple[str, str, str]]:
    objects = render_manifests(
        ManifestsConfig.model_validate({"path": path, **given}), release="shop", namespace="ns"
    )
    return [(o.kind, o.name, o.origin) for o in objects]


def problems(path: Path, **given: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        render(path, **given)
    return [str(p) for p in info.value.problems]


# --- plain ---------------------------------------------------------------------------------


def test_a_plain_directory_is_every_object_of_its_yaml_files_in_name_order() -> None:
    plain = "tests/fixtures/manifests/plain"
    assert render(FIXTURES / "plain") == [
        ("Deployment", "shop", f"{plain}/deployment.yaml:1"),
        ("HorizontalPodAutoscaler", "shop", f"{plain}/scaling.yaml:2"),
        ("PodDisruptionBudget", "shop", f"{plain}/scaling.yaml:15"),
        ("Service", "shop", f"{plain}/service.yml:1"),
    ]


def test_todays_two_templates_are_a_plain_directory() -> None:
    kinds = [kind for kind, _, _ in render(REPO / "deployments" / "manifests")]
    assert kinds == ["Deployment", "Service"]


def test_bad_plain_files_are_every_problem_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n")
    (tmp_path / "b.yaml").write_text("kind: [Service\n")
    (tmp_path / "c.yml").write_text("apiVersion: v1\nkind: Service\n---\n- one\n- two\n")
    found = problems(tmp_path)
    assert len(found) == 2
    assert found[0].startswith(f"{tmp_path}/b.yaml:2:1: YAML syntax error")
    assert found[1] == (
        f"{tmp_path}/c.yml:4:1: {tmp_path}/c.yml:4: a document here is a list, not a Kubernetes "
        "object — write one mapping with apiVersion, kind and metadata.name per document"
    )


def test_an_empty_directory_and_a_missing_one_are_problems(tmp_path: Path) -> None:
    assert "holds no *.yaml or *.yml file" in problems(tmp_path)[0]
    assert "does not exist" in problems(tmp_path / "nope")[0]


def test_a_file_leading_outside_the_app_is_not_read(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (tmp_path / "secret.yaml").write_text("apiVersion: v1\nkind: Secret\n")
    (app / "s.yaml").symlink_to(tmp_path / "secret.yaml")
    assert app_root(app) == app.resolve()  # no Git work tree around it
    [found] = problems(app)
    assert "'s.yaml' leads outside" in found and "move it inside" in found


def test_the_manifests_and_values_must_be_in_the_apps_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "k8s").mkdir(parents=True)
    (repo / "k8s" / "a.yaml").write_text("apiVersion: v1\nkind: Service\n")
    assert render_manifests(
        ManifestsConfig(path=repo / "k8s"), release="r", namespace="n", root=repo
    )
    [found] = problems_in(ManifestsConfig(path=FIXTURES / "plain"), repo)
    plain = "tests/fixtures/manifests/plain"
    assert found.startswith(f"{plain}: '{plain}' leads outside {repo}, the app's repository")
    chart = ManifestsConfig(path=FIXTURES / "helm" / "chart", values=[tmp_path / "v.yaml"])
    [found] = problems_in(chart, REPO)
    assert found.startswith(f"{tmp_path}/v.yaml: '{tmp_path}/v.yaml' leads outside {REPO}")


def problems_in(source: ManifestsConfig, root: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        render_manifests(source, release="r", namespace="n", root=root)
    return [str(p) for p in info.value.problems]


# --- refusals: nothing runs -----------------------------------------------------------------


def test_a_remote_base_is_refused_before_kustomize_runs(stand_in: Path) -> None:
    [found] = problems(FIXTURES / "refused" / "remote-base")
    assert found.startswith(
        "tests/fixtures/manifests/refused/remote-base/kustomization.yaml:5:5: resources[1]: "
        "'https://github.com/example/shop//deploy/base?ref=v1.2.0' is a remote base"
    )
    assert not stand_in.exists()


def test_an_exec_plugin_is_refused_before_kustomize_runs(stand_in: Path) -> None:
    [found] = problems(FIXTURES / "refused" / "exec-plugin")
    assert found.startswith(
        "tests/fixtures/manifests/refused/exec-plugin/kustomization.yaml:6:5: generators[0]: "
        "make-secret.yaml: a KRM function (config.kubernetes.io/function): it runs a program"
    )
    assert not stand_in.exists()


def test_a_file_outside_the_repository_is_refused(stand_in: Path) -> None:
    [found] = problems(FIXTURES / "refused" / "outside")
    assert found.startswith(
        "tests/fixtures/manifests/refused/outside/kustomization.yaml:6:9: "
        "configMapGenerator[0].files[0]: '/etc/passwd' leads outside"
    )
    assert not stand_in.exists()


def test_every_kustomization_of_an_overlay_is_checked(tmp_path: Path, stand_in: Path) -> None:
    (tmp_path / ".git").mkdir()  # the app's repository
    base, overlay = tmp_path / "base", tmp_path / "overlay"
    base.mkdir()
    overlay.mkdir()
    (base / "kustomization.yaml").write_text("resources:\n  - example.com/org/repo/base\n")
    (overlay / "kustomization.yaml").write_text("resources:\n  - ../base\n")
    [found] = problems(overlay)
    assert found.startswith(f"{base}/kustomization.yaml:2:5: resources[0]: ")
    assert "is not a file or directory here" in found and "remote base" in found
    assert not stand_in.exists()


def test_a_chart_with_dependencies_not_vendored_is_refused(tmp_path: Path, stand_in: Path) -> None:
    (tmp_path / "Chart.yaml").write_text(
        "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n"
        "  - name: redis\n    version: 1.0.0\n    repository: https://charts.example\n"
    )
    [found] = problems(tmp_path)
    assert "dependency 'redis' is not vendored under charts/" in found
    assert not stand_in.exists()


# --- the tools ------------------------------------------------------------------------------


def test_a_failing_tool_is_a_problem_with_its_message(stand_in: Path) -> None:
    [found] = problems(FIXTURES / "kustomize" / "overlays" / "dev")
    assert found == (
        "tests/fixtures/manifests/kustomize/overlays/dev: tool kustomize failed (exit 3): "
        "it broke — fix the kustomization"
    )
    [ran] = stand_in.read_text().splitlines()
    assert "--enable-alpha-plugins=false" in ran and "--enable-helm=false" in ran
    [found] = problems(FIXTURES / "helm" / "chart", values=[FIXTURES / "helm" / "values-dev.yaml"])
    assert "tool template failed (exit 3): it broke — fix the chart or its values" in found
    helm = stand_in.read_text().splitlines()[1]
    assert helm.startswith("template shop ") and "--skip-tests" in helm
    assert f"--values={FIXTURES}/helm/values-dev.yaml" in helm


def test_a_missing_tool_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KUBECTL_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match=f"kubectl is not installed .* set {KUBECTL_ENV}"):
        render(FIXTURES / "kustomize" / "overlays" / "dev")
    monkeypatch.setenv(HELM_ENV, "/nonexistent/helm")
    with pytest.raises(UsageError, match=f"{HELM_ENV}=/nonexistent/helm is not an executable"):
        render(FIXTURES / "helm" / "chart")


def test_a_kind_written_wins_over_the_detected_one() -> None:
    chart = FIXTURES / "helm" / "chart"
    assert source_kind(ManifestsConfig(path=chart)) == "helm"
    assert source_kind(ManifestsConfig(path=FIXTURES / "kustomize" / "base")) == "kustomize"
    assert source_kind(ManifestsConfig(path=FIXTURES / "plain")) == "plain"
    assert source_kind(ManifestsConfig(path=chart, kind="plain")) == "plain"
