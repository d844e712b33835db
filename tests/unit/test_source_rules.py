"""The pure rules of `manifests:` sources: which kind a directory is, what a kustomization or a
chart may not do, and what becomes of each rendered document. Also the `manifests:` section as
the loader checks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bascule.config.base import Found, Surroundings
from bascule.config.manifests import ManifestsConfig
from bascule.config_files import load_environment
from bascule.source_rules import (
    chart_dependency_problems,
    detect_kind,
    helm_origins,
    kind_mismatch,
    kustomization_references,
    objects_of,
    plain_files,
    plugin_problem,
)
from bascule.yamlsource import ConfigError, parse_yaml, parse_yaml_stream

# --- which kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        ({"kustomization.yaml", "deployment.yaml"}, "kustomize"),
        ({"kustomization.yml"}, "kustomize"),
        ({"Kustomization", "Chart.yaml"}, "kustomize"),
        ({"Chart.yaml", "values.yaml", "templates"}, "helm"),
        ({"deployment.yaml", "service.yaml"}, "plain"),
        (set(), "plain"),
    ],
)
def test_the_kind_is_detected_from_the_files(names: set[str], kind: str) -> None:
    assert detect_kind(names) == kind


def test_a_kind_written_must_match_the_directory() -> None:
    assert kind_mismatch("plain", {"a.yaml"}) is None
    assert "no Chart.yaml" in str(kind_mismatch("helm", {"a.yaml"}))
    assert "kustomization.yaml" in str(kind_mismatch("kustomize", {"Chart.yaml"}))
    assert "Helm chart" in str(kind_mismatch("plain", {"Chart.yaml"}))


def test_a_plain_directory_is_its_yaml_files_by_name() -> None:
    names = {"b.yml", "a.yaml", "README.md", ".hidden.yaml", "templates"}
    assert plain_files(names) == ["a.yaml", "b.yml"]


# --- documents --------------------------------------------------------------------------------


def test_every_document_becomes_an_object_with_its_file_and_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\n---\n" + (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"
    )
    objects, problems = objects_of(parse_yaml_stream(text, "m/x.yaml"))
    assert problems == []
    assert [(o.kind, o.name, o.origin) for o in objects] == [
        ("Service", "a", "m/x.yaml:1"),
        ("ConfigMap", "b", "m/x.yaml:7"),
    ]


def test_a_list_is_its_items() -> None:
    item = "{apiVersion: v1, kind: Secret, metadata: {name: s}}"
    text = f"apiVersion: v1\nkind: List\nitems:\n- {item}\n"
    objects, _ = objects_of(parse_yaml_stream(text, "l.yaml"))
    assert [(o.kind, o.origin) for o in objects] == [("Secret", "l.yaml:1 items[0]")]


def test_documents_that_are_not_objects_are_problems_at_their_line() -> None:
    text = "- a list\n---\nkind: Service\n---\napiVersion: v1\nkind: Service\n"
    objects, problems = objects_of(parse_yaml_stream(text, "bad.yaml"))
    assert [o.kind for o in objects] == ["Service"]
    assert [(p.file, p.mark and p.mark.line) for p in problems] == [
        ("bad.yaml", 1),
        ("bad.yaml", 3),
    ]
    assert "is a list, not a Kubernetes object" in problems[0].message
    assert "without apiVersion" in problems[1].message


def test_a_yaml_error_in_a_stream_names_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml_stream("a: 1\n---\nb: [1, 2\n", "m.yaml")
    assert info.value.problems[0].file == "m.yaml"
    assert "YAML syntax error" in info.value.problems[0].message


def test_helm_objects_are_named_by_their_template() -> None:
    out = (
        "---\n# Source: shop/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\n"
        "metadata: {name: c}\n---\n# Source: shop/templates/svc.yaml\napiVersion: v1\n"
        "kind: Service\nmetadata: {name: s}\n"
    )
    docs = parse_yaml_stream(out, "helm")
    assert helm_origins(out, docs, "chart/") == {
        0: "helm chart chart/: shop/templates/cm.yaml",
        1: "helm chart chart/: shop/templates/svc.yaml",
    }


# --- kustomizations -------------------------------------------------------------------------


def refs_and_problems(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    refs, problems = kustomization_references(parse_yaml(text, "k/kustomization.yaml"))
    return [(r.role, r.path) for r in refs], [str(p) for p in problems]


@pytest.mark.parametrize(
    "remote",
    [
        "https://github.com/org/repo//base?ref=v1",
        "github.com/org/repo/base?ref=main",
        "git@github.com:org/repo.git",
        "ssh://git.example/repo.git",
        "../local?ref=v1",
    ],
)
def test_a_remote_base_is_refused_at_its_key(remote: str) -> None:
    refs, problems = refs_and_problems(f"resources:\n  - a.yaml\n  - {remote}\n")
    assert refs == [("resource", "a.yaml")]
    assert problems == [
        f"k/kustomization.yaml:3:5: resources[1]: {remote!r} is a remote base: kustomize "
        "would fetch it — vendor it into the repository and name its directory"
    ]


def test_bases_and_components_are_resources_too() -> None:
    refs, problems = refs_and_problems(
        "bases:\n  - ../base\ncomponents:\n  - https://example.com/c.git\n"
    )
    assert refs == [("resource", "../base")]
    assert len(problems) == 1 and problems[0].startswith("k/kustomization.yaml:4:5: components[0]")


def test_helm_inflation_is_refused() -> None:
    _, problems = refs_and_problems("helmCharts:\n  - name: redis\n    repo: https://x\n")
    assert len(problems) == 1
    assert "helmCharts" in problems[0] and "kind: helm" in problems[0]


def test_files_named_by_other_fields_are_checked_references() -> None:
    text = """\
crds: [crd.yaml]
configurations: [conf.yaml]
patchesStrategicMerge:
  - strategic.yaml
  - |
    apiVersion: v1
    kind: Service
patches:
  - path: p.yaml
  - patch: "[]"
patchesJson6902:
  - path: j.yaml
replacements:
  - path: r.yaml
openapi:
  path: schema.json
configMapGenerator:
  - name: c
    files: [a.txt, key=b.txt]
    envs: [c.env]
secretGenerator:
  - name: s
    env: d.env
"""
    refs, problems = refs_and_problems(text)
    assert problems == []
    assert [path for role, path in refs if role == "file"] == [
        "crd.yaml",
        "conf.yaml",
        "strategic.yaml",
        "p.yaml",
        "j.yaml",
        "r.yaml",
        "schema.json",
        "a.txt",
        "b.txt",
        "c.env",
        "d.env",
    ]


def test_an_inline_plugin_that_runs_code_is_refused() -> None:
    text = """\
transformers:
  - |
    apiVersion: builtin
    kind: LabelTransformer
    metadata: {name: ok}
  - |
    apiVersion: example.com/v1
    kind: Stamp
    metadata:
      name: stamp
      annotations:
        config.kubernetes.io/function: "container: {image: evil}"
"""
    refs, problems = refs_and_problems(text)
    assert refs == []
    assert len(problems) == 1
    assert problems[0].startswith("k/kustomization.yaml:6:5: transformers[1]: a KRM function")


def test_only_builtin_plugins_are_allowed() -> None:
    assert plugin_problem({"apiVersion": "builtin", "kind": "PatchTransformer"}) is None
    assert "runs code" in str(plugin_problem({"apiVersion": "someteam/v1", "kind": "Gen"}))
    exec_fn = {
        "apiVersion": "builtin",
        "metadata": {"annotations": {"config.kubernetes.io/function": "exec: {path: x}"}},
    }
    assert "KRM function" in str(plugin_problem(exec_fn))
    assert plugin_problem(["not", "a", "mapping"]) is not None


# --- charts ---------------------------------------------------------------------------------


def test_a_chart_dependency_must_be_vendored() -> None:
    chart = parse_yaml(
        "apiVersion: v2\nname: app\ndependencies:\n"
        "  - name: redis\n    version: 1.0.0\n    repository: https://charts.example\n"
        "  - name: common\n    repository: file://../common\n"
        "  - name: db\n    version: 2.1.0\n",
        "app/Chart.yaml",
    )
    problems = chart_dependency_problems(chart, {"common", "db-2.1.0.tgz"})
    assert [str(p) for p in problems] == [
        "app/Chart.yaml:4:11: dependencies[0].name: dependency 'redis' is not vendored under "
        "charts/ — Bascule fetches nothing: run `helm dependency build` and commit charts/"
    ]
    assert chart_dependency_problems(chart, {"redis", "common", "db"}) == []


# --- the `manifests:` section ------------------------------------------------------------------

MINIMAL = "app: shop\nenvironment: staging\nnamespace: shop-staging\n"


def load(tmp_path: Path, manifests: str) -> ManifestsConfig:
    (tmp_path / "staging.yaml").write_text(MINIMAL + manifests)
    return load_environment(tmp_path / "staging.yaml").manifests


def problems_of(tmp_path: Path, manifests: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, manifests)
    return [str(p) for p in info.value.problems]


def test_manifests_is_a_path_or_a_mapping(tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "shop"
    chart.mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: shop\nversion: 0.1.0\n")
    (tmp_path / "values").mkdir()
    (tmp_path / "values" / "staging.yaml").write_text("replicas: 2\n")
    assert load(tmp_path, "") == ManifestsConfig(path=tmp_path / "manifests")
    assert load(tmp_path, "manifests: k8s/app\n") == ManifestsConfig(path=tmp_path / "k8s/app")
    cfg = load(
        tmp_path,
        "manifests:\n  path: charts/shop\n  values: [values/staging.yaml]\n  release: shop-web\n",
    )
    assert cfg == ManifestsConfig(
        path=chart, values=(tmp_path / "values" / "staging.yaml",), release="shop-web"
    )
    # Detected as a chart: values are allowed without `kind: helm`.
    assert cfg.kind is None


def test_manifests_problems_name_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # messages show paths relative to the working directory
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.yaml").write_text("kind: Service\n")
    (tmp_path / "file.yaml.txt").write_text("")
    assert problems_of(tmp_path, "manifests:\n  path: plain\n  kind: helm\n") == [
        "staging.yaml:6:9: manifests.kind: plain has no Chart.yaml — fix `kind:` or leave it "
        "out to detect it"
    ]
    assert problems_of(tmp_path, "manifests:\n  path: plain\n  values: [v.yaml]\n") == [
        "staging.yaml:6:11: manifests.values: only a Helm chart takes `values:` and plain is "
        "not one (it has no Chart.yaml) — remove `values:` or point `path:` at the chart"
    ]
    assert problems_of(tmp_path, "manifests: file.yaml.txt\n") == [
        "staging.yaml:4:12: manifests.path: file.yaml.txt is a file — name the directory that "
        "holds the manifests"
    ]
    (tmp_path / "plain" / "Chart.yaml").write_text("name: x\n")
    missing = problems_of(tmp_path, "manifests:\n  path: plain\n  values: [nope.yaml]\n")
    assert missing == [
        "staging.yaml:6:12: manifests.values[0]: nope.yaml does not exist — fix the path "
        "(relative to this file)"
    ]
    assert (
        "not a Helm release name"
        in problems_of(tmp_path, "manifests:\n  path: plain\n  release: Shop_Web\n")[0]
    )
    assert "kind" in problems_of(tmp_path, "manifests:\n  kind: jsonnet\n")[0]


def test_the_section_validates_without_the_loader() -> None:
    # Plain data (no Surroundings): the checks that need files are skipped, the rest hold.
    assert ManifestsConfig.model_validate("k8s").path == Path("k8s")
    with pytest.raises(ValueError, match="only a Helm chart"):
        ManifestsConfig.model_validate({"path": "k8s", "kind": "plain", "release": "x"})
    seen = Surroundings(
        "staging", frozenset(), {Path("k8s"): Found("k8s", "dir", entries=frozenset({"a.yaml"}))}
    )
    with pytest.raises(ValueError, match=r"has no kustomization\.yaml"):
        ManifestsConfig.model_validate({"path": "k8s", "kind": "kustomize"}, context=seen)
