"""Environment configuration: valid files load; every kind of mistake names file, line and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from bascule import analysis
from bascule.cli import main
from bascule.config import (
    ConfigError,
    EnvironmentConfig,
    HealthCheck,
    check_environment_name,
    describe_schema,
    environment_file,
    environment_order,
)
from bascule.config.base import Found, Surroundings
from bascule.config_files import app_names, exposed_secrets, load_all, load_environment
from bascule.errors import UsageError
from bascule.tasks.context import Env
from bascule.trigger.options import local_app
from bascule.yamlsource import Mark, parse_yaml
from tests.support.envs import copy_deployments
from tests.support.signers import NOBODY, evidence_from_nobody, listing_nobody

REPO_DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"


@pytest.fixture
def deployments(tmp_path: Path) -> Path:
    return copy_deployments(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def errors_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_environment(path)
    return info.value


def directory_errors(directory: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_all(directory)
    return info.value


MINIMAL = """\
app: shop
environment: staging
namespace: shop-staging
"""


# --- valid configuration -------------------------------------------------------------------------


def test_repository_environments_load(deployments: Path) -> None:
    # The repository's files, once its allowed_signers lists an approver.
    configs = load_all(deployments)
    assert list(configs) == ["dev", "staging", "production"]
    assert {cfg.app for cfg in configs.values()} == {"sample-app"}
    assert len({cfg.namespace for cfg in configs.values()}) == 3
    assert configs["production"].approval.required is True
    assert configs["dev"].approval.required is False
    assert [name for name, cfg in configs.items() if cfg.protected] == ["production"]
    for cfg in configs.values():
        assert cfg.rollout.scale_down_delay_seconds >= cfg.verification.window_seconds
        assert cfg.manifests.path == deployments / "manifests"
        assert cfg.checks.health, "every environment checks health"


def test_the_repository_production_needs_its_approvers_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # It ships listing nobody: validate says what to add, and the other files are fine.
    assert main(["validate", "--dir", str(REPO_DEPLOYMENTS)]) == 2
    out = capsys.readouterr().out.splitlines()
    text = (REPO_DEPLOYMENTS / "production.yaml").read_text()
    where = f"production.yaml:{line_of(text, 'allowed_signers: allowed_signers')}:20"
    assert [line.split(": ")[-1] for line in out[:2]] == ["OK", "OK"], out
    assert where in out[2] and "approval.allowed_signers: " in out[2], out
    assert "allowed_signers lists no key, and production is protected: nobody could" in out[2]
    assert "add one `principal ssh-ed25519 AAAA…` line per approver" in out[2]
    assert out[3:] == ["1 file(s) with problems; nothing was changed"]


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    cfg = load_environment(write(tmp_path / "staging.yaml", MINIMAL))
    assert cfg.replicas == 2
    assert cfg.image is None
    assert cfg.kube.kubeconfig is None and cfg.kube.context is None
    assert cfg.approval.required is False
    assert cfg.approval.timeout_seconds == 3600
    assert cfg.history.limit == 20
    assert cfg.checks.health == [] and cfg.checks.smoke.job is None
    assert cfg.rollout.scale_down_delay_seconds >= cfg.verification.window_seconds


def test_production_requires_approval_and_cannot_turn_it_off(tmp_path: Path) -> None:
    text = MINIMAL.replace("staging", "production") + listing_nobody(tmp_path)
    cfg = load_environment(write(tmp_path / "production.yaml", text))
    assert cfg.protected is True and cfg.approval.required is True
    text += "  timeout_seconds: 60\n"
    cfg = load_environment(write(tmp_path / "production.yaml", text))
    assert cfg.approval.required is True and cfg.approval.timeout_seconds == 60
    text += "  required: false\n"
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert str(problem).endswith(
        f"production.yaml:{line_of(text, 'required: false')}:13: approval.required: "
        "production is protected: its approval cannot be turned off — remove `required: false`"
    )


def test_any_environment_can_be_protected_and_production_always_is(tmp_path: Path) -> None:
    signed = listing_nobody(tmp_path)
    cfg = load_environment(write(tmp_path / "staging.yaml", MINIMAL + signed))
    assert cfg.protected is False and cfg.approval.required is False
    cfg = load_environment(write(tmp_path / "staging.yaml", MINIMAL + "protected: true\n" + signed))
    assert cfg.protected is True and cfg.approval.required is True
    assert (cfg.analysis.no_data, cfg.analysis.unreachable) == ("fail", "fail")
    text = MINIMAL + "protected: true\n" + signed + "  required: false\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert (problem.field, problem.mark) == ("approval.required", Mark(7, 13))
    assert "staging is protected: its approval cannot be turned off" in problem.message
    text = MINIMAL.replace("staging", "production") + "protected: false\n" + signed
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert str(problem).endswith(
        "production.yaml:4:12: protected: production is always protected — remove "
        "`protected: false`"
    )


def test_a_protected_environment_needs_an_allowed_signers_file_with_a_key(
    tmp_path: Path,
) -> None:
    text = MINIMAL.replace("staging", "production")
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert str(problem).endswith(
        "production.yaml:1:1: approval: production is protected: its approvals must be signed "
        "— set approval.allowed_signers to a file listing each approver's SSH key, one "
        "`principal ssh-ed25519 AAAA…` line each (README: signed approvals)"
    )
    text += "approval:\n  timeout_seconds: 60\n"
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert (problem.field, problem.mark) == ("approval", Mark(4, 1))
    text += "  allowed_signers: approvers\n"
    write(tmp_path / "approvers", "# nobody yet\n\n")
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert (problem.field, problem.mark) == ("approval.allowed_signers", Mark(6, 20))
    assert "approvers lists no key, and production is protected: nobody could approve" in (
        problem.message
    )
    # The same empty file is fine where nothing is protected: nobody can approve there either.
    unprotected = write(
        tmp_path / "staging.yaml", MINIMAL + "approval:\n  allowed_signers: approvers\n"
    )
    assert load_environment(unprotected).approval.allowed_signers == tmp_path / "approvers"
    write(tmp_path / "approvers", NOBODY + "\n")
    assert load_environment(tmp_path / "production.yaml").protected is True


def test_protection_is_the_environments_not_an_apps(deployments: Path) -> None:
    overlay = deployments / "apps" / "other" / "staging.yaml"
    overlay.parent.mkdir(parents=True)
    write(overlay, "replicas: 1\nprotected: true\n")
    with pytest.raises(ConfigError) as info:
        load_environment(deployments / "staging.yaml", "other")
    [problem] = info.value.problems
    assert str(problem).endswith(
        "apps/other/staging.yaml:2:1: protected: protection is the environment's, not an "
        "app's — remove it here and set it in staging.yaml"
    )


def test_env_values_are_strings_and_yaml_1_1_surprises_are_gone(tmp_path: Path) -> None:
    text = MINIMAL + "env:\n  PORT: 8080\n  DEBUG: true\n  MODE: on\n  DAY: 2024-01-01\n  N: 010\n"
    cfg = load_environment(write(tmp_path / "staging.yaml", text))
    assert cfg.env == {
        "PORT": "8080",
        "DEBUG": "true",
        "MODE": "on",
        "DAY": "2024-01-01",
        "N": "10",
    }


def test_relative_paths_are_taken_from_the_file(tmp_path: Path) -> None:
    text = MINIMAL + "kube:\n  kubeconfig: ../kube/config\n  context: local\nmanifests: k8s\n"
    cfg = load_environment(write(tmp_path / "staging.yaml", text))
    assert cfg.kube.kubeconfig == tmp_path / "../kube/config"
    assert cfg.kube.context == "local"
    assert cfg.manifests.path == tmp_path / "k8s"


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = MINIMAL + (
        "checks:\n"
        "  health:\n"
        "    - &probe {name: ready, path: /readyz, successes: 2}\n"
        "    - <<: *probe\n"
        "      name: live\n"
        "      path: /healthz\n"
    )
    cfg = load_environment(write(tmp_path / "staging.yaml", text))
    assert [(c.name, c.path, c.successes) for c in cfg.checks.health] == [
        ("ready", "/readyz", 2),
        ("live", "/healthz", 2),
    ]


def test_image_tag_placeholder() -> None:
    check = HealthCheck(
        name="version", path="/version", json_field="version", json_equals="{image_tag}"
    )
    assert check.expected_json("bascule.local/sample-app:v2") == "v2"


def test_resolve_image_prefers_the_override() -> None:
    cfg = EnvironmentConfig(app="shop", environment="dev", namespace="shop", image="shop:v1")
    assert cfg.resolve_image() == "shop:v1"
    assert cfg.resolve_image("shop:v2") == "shop:v2"
    with pytest.raises(ValueError, match="latest"):
        cfg.resolve_image("shop:latest")
    with pytest.raises(ValueError, match="--image"):
        EnvironmentConfig(app="shop", environment="dev", namespace="shop").resolve_image()


def test_schema_is_documented() -> None:
    lines = describe_schema()
    assert all(line.split(": ", 1)[1] not in ("", "None") for line in lines)
    keys = {line.split(" ", 1)[0] for line in lines}
    assert {"app", "approval.required", "checks.health[].json_field", "history.limit"} <= keys


# --- errors name file, line, column and field ----------------------------------------------------


def test_unknown_key(deployments: Path) -> None:
    path = deployments / "staging.yaml"
    text = path.read_text().replace("  ready_timeout_seconds:", "  ready_timout_seconds:")
    write(path, text)
    [problem] = errors_of(path).problems
    assert problem.file.endswith("staging.yaml")
    assert problem.mark is not None and problem.mark.line == line_of(text, "ready_timout_seconds")
    assert problem.mark.column == 3
    assert problem.field == "rollout.ready_timout_seconds"
    assert "did you mean 'ready_timeout_seconds'" in problem.message
    assert "allowed keys: ready_timeout_seconds, progress_deadline_seconds" in problem.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = MINIMAL + "notification:\n  slack: x\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert (problem.field, problem.mark and problem.mark.line) == ("notification", 4)
    assert "did you mean 'notifications'" in problem.message
    assert "allowed keys: app, environment, namespace" in problem.message


def test_wrong_type(deployments: Path) -> None:
    path = deployments / "staging.yaml"
    text = path.read_text().replace(
        "      path: /readyz\n", "      path: /readyz\n      expect_status: abc\n"
    )
    write(path, text)
    error = errors_of(path)
    [problem] = error.problems
    line = line_of(text, "expect_status: abc")
    assert str(problem).startswith(f"{problem.file}:{line}:22: checks.health[0].expect_status: ")
    assert "valid integer" in problem.message and "fix the value" in problem.message
    assert str(error) == str(problem)


def test_every_error_of_a_file_is_reported(tmp_path: Path) -> None:
    text = MINIMAL + "replicas: many\nimage: Shop\nhistory:\n  limit: 0\nextra: 1\n"
    problems = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert [(p.field, p.mark and p.mark.line) for p in problems] == [
        ("replicas", 4),
        ("image", 5),
        ("history.limit", 7),
        ("extra", 8),
    ]


def test_missing_required_key(tmp_path: Path) -> None:
    text = MINIMAL.replace("namespace: shop-staging\n", "checks:\n  health:\n    - path: /x\n")
    problems = errors_of(write(tmp_path / "staging.yaml", text)).problems
    by_field = {p.field: p for p in problems}
    assert "required key 'namespace' is missing" in by_field["namespace"].message
    assert "Kubernetes namespace" in by_field["namespace"].message
    assert by_field["checks.health[0].name"].mark is not None
    assert by_field["checks.health[0].name"].mark.line == 5


def test_environment_must_match_file_name(tmp_path: Path) -> None:
    [problem] = errors_of(write(tmp_path / "dev.yaml", MINIMAL)).problems
    assert problem.field == "environment" and problem.mark is not None
    assert problem.mark.line == 2 and "environment: dev" in problem.message


@pytest.mark.parametrize(
    "name", ["../x/production", "production/../production", "Production", "production.yaml", ""]
)
def test_an_environment_name_is_a_name_not_a_path(
    deployments: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Elsewhere on the machine, a file that calls itself production, approved by anyone.
    elsewhere = deployments.parent / "x" / "production.yaml"
    elsewhere.parent.mkdir()
    write(elsewhere, MINIMAL.replace("staging", "production") + "protected: false\n")
    rule = (
        f"{name!r} is not a valid environment name — use at most 30 lowercase letters, digits "
        "and '-', starting with a lowercase letter or digit and ending with a letter or digit"
    )
    for reading in (
        lambda: environment_file(deployments, name),
        lambda: app_names(deployments, name),
        lambda: Env.open(name, deployments),
        lambda: local_app(name, None, deployments),
    ):
        with pytest.raises(UsageError) as info:
            reading()
        assert str(info.value) == rule
    assert main(["validate", "--dir", str(deployments), name]) == 2
    assert rule in capsys.readouterr().err
    assert environment_file(deployments, "production") == deployments / "production.yaml"


def test_bad_image_reference(tmp_path: Path) -> None:
    text = MINIMAL + "image: registry.example/Shop:v1\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.field == "image" and problem.mark is not None and problem.mark.line == 4
    assert "is not valid" in problem.message and "lowercase" in problem.message


def test_unpinned_image(tmp_path: Path) -> None:
    [problem] = errors_of(write(tmp_path / "staging.yaml", MINIMAL + "image: shop\n")).problems
    assert "no tag or digest" in problem.message


def test_bad_yaml_syntax(tmp_path: Path) -> None:
    text = MINIMAL + "env:\n  A: [1, 2\n  B: 3\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.mark is not None and problem.mark.line in (6, 7)
    assert "YAML syntax error" in problem.message


def test_duplicate_key(tmp_path: Path) -> None:
    text = MINIMAL + "replicas: 2\nreplicas: 3\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.field == "replicas" and problem.mark is not None
    assert problem.mark.line == 5 and "first at line 4" in problem.message


def test_empty_file(tmp_path: Path) -> None:
    [problem] = errors_of(write(tmp_path / "staging.yaml", "# nothing\n")).problems
    assert "expected a mapping" in problem.message


def test_scale_down_delay_must_cover_the_verification_window(tmp_path: Path) -> None:
    text = (
        MINIMAL + "rollout:\n  scale_down_delay_seconds: 10\nverification:\n  window_seconds: 30\n"
    )
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.field == "rollout.scale_down_delay_seconds"
    assert problem.mark is not None and problem.mark.line == 5
    assert "at least 30" in problem.message


def test_check_consistency_rules(tmp_path: Path) -> None:
    text = MINIMAL + (
        "checks:\n"
        "  health:\n"
        "    - name: a\n"
        "      path: /a\n"
        "      json_equals: 1\n"
        "    - name: b\n"
        "      path: /b\n"
        "      successes: 10\n"
        "      interval_seconds: 10\n"
        "      url: ftp://x\n"
    )
    problems = errors_of(write(tmp_path / "staging.yaml", text)).problems
    fields = {p.field: p.mark and p.mark.line for p in problems}
    assert fields == {
        "checks.health[0].json_equals": 8,
        "checks.health[1].url": 13,
    }
    text = text.replace("      url: ftp://x\n", "").replace("      json_equals: 1\n", "")
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.field == "checks.health[1].timeout_seconds"


def test_duplicate_check_names(tmp_path: Path) -> None:
    text = MINIMAL + "checks:\n  health:\n    - {name: a, path: /a}\n    - {name: a, path: /b}\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.field == "checks.health[1].name" and problem.mark is not None
    assert problem.mark.line == 7


def test_load_all_collects_problems_of_every_file(deployments: Path) -> None:
    dev = deployments / "dev.yaml"
    write(dev, dev.read_text().replace("namespace:", "namespac:"))
    staging = deployments / "staging.yaml"
    write(staging, staging.read_text().replace("replicas: 2", "replicas: -1"))
    with pytest.raises(ConfigError) as info:
        load_all(deployments)
    assert [Path(f).name for f in info.value.files] == ["dev.yaml", "staging.yaml"]


def test_environments_may_not_share_a_namespace_or_differ_in_app(deployments: Path) -> None:
    staging = deployments / "staging.yaml"
    write(staging, staging.read_text().replace("bascule-staging", "bascule-dev"))
    production = deployments / "production.yaml"
    write(production, production.read_text().replace("app: sample-app", "app: other-app"))
    with pytest.raises(ConfigError) as info:
        load_all(deployments)
    problems = {(Path(p.file).name, p.field): p for p in info.value.problems}
    assert "also dev's namespace" in problems["staging.yaml", "namespace"].message
    assert "apps/other-app/production.yaml" in problems["production.yaml", "app"].message


def qa_file(deployments: Path, extra: str = "") -> Path:
    """A qa environment of the sample app beside the repository's, taking dev's releases."""
    text = MINIMAL.replace("staging", "qa").replace("shop", "sample-app")
    return write(deployments / "qa.yaml", text + "promote_from: dev\n" + extra)


def test_any_set_of_environment_names_loads_dev_first_and_production_last(
    deployments: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    qa_file(deployments)
    assert list(load_all(deployments)) == ["dev", "qa", "staging", "production"]
    assert main(["validate", "--dir", str(deployments)]) == 0
    out = capsys.readouterr().out.splitlines()[:4]  # then what each one manages
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in out] == [
        "dev.yaml",
        "qa.yaml",
        "staging.yaml",
        "production.yaml",
    ]
    # A production-like one beside production: protected by its file, with production's rules.
    qa_file(deployments, "protected: true\n")
    [problem] = directory_errors(deployments).problems
    assert problem.file.endswith("qa.yaml") and "qa is protected" in problem.message


def test_one_environment_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "uat.yaml", MINIMAL.replace("staging", "uat"))
    shutil.copytree(REPO_DEPLOYMENTS / "manifests", tmp_path / "manifests")
    assert list(load_all(tmp_path)) == ["uat"]
    assert main(["validate", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'uat.yaml'}: OK\nuat (shop) manages:\n"), out


def test_environment_order() -> None:
    names = ["production", "uat", "staging", "qa", "dev", "1st"]
    assert environment_order(names) == ["dev", "1st", "qa", "staging", "uat", "production"]


def test_promote_from_names_an_environment_of_the_directory(deployments: Path) -> None:
    qa = qa_file(deployments)
    (deployments / "dev.yaml").rename(deployments / "dev.yml")
    by_file = {Path(p.file).name: p for p in directory_errors(deployments).problems}
    assert "rename it to dev.yaml" in by_file["dev.yml"].message
    problem = by_file["qa.yaml"]
    assert (problem.field, problem.mark and problem.mark.line) == ("promote_from", 4)
    assert "no environment 'dev' (dev.yaml) beside this file" in problem.message
    assert "name one of staging, production" in problem.message  # not itself
    assert str(problem).startswith(f"{qa}:4:")


def test_files_that_cannot_be_environments_are_refused_naming_them(
    deployments: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("QA.yaml", "eu_west.yaml", "a-name-longer-than-thirty-characters.yaml"):
        write(deployments / name, MINIMAL)
    write(deployments / "notes.yml", "")
    # Not environments, and left alone: other files, subdirectories, hidden files.
    write(deployments / "README.md", "")
    write(deployments / ".#dev.yaml", "")
    write(deployments / "monitoring" / "extra.yaml", "")
    before = sorted((p, p.read_bytes()) for p in deployments.rglob("*") if p.is_file())
    problems = {Path(p.file).name: p.message for p in directory_errors(deployments).problems}
    assert sorted(problems) == sorted(
        ["QA.yaml", "eu_west.yaml", "a-name-longer-than-thirty-characters.yaml", "notes.yml"]
    )
    assert "'QA' is not a valid environment name" in problems["QA.yaml"]
    assert "at most 30 lowercase letters" in problems["eu_west.yaml"]
    assert "rename it, or move it into a subdirectory" in problems["eu_west.yaml"]
    assert "rename it to notes.yaml" in problems["notes.yml"]
    # Loading one environment does not scan for others to refuse.
    assert load_environment(deployments / "dev.yaml").environment == "dev"
    assert main(["validate", "--dir", str(deployments)]) == 2
    out = capsys.readouterr().out
    assert "dev.yaml: OK" in out and "QA.yaml: 'QA' is not a valid" in out
    assert "4 file(s) with problems; nothing was changed" in out
    assert main(["status", "--dir", str(deployments)]) == 2  # before any cluster is asked
    err = capsys.readouterr().err
    assert "eu_west.yaml" in err and "Kubernetes" not in err
    after = sorted((p, p.read_bytes()) for p in deployments.rglob("*") if p.is_file())
    assert after == before


def test_an_empty_or_missing_directory_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifests").mkdir()
    [problem] = directory_errors(tmp_path).problems
    assert problem.file == str(tmp_path) and "no environment files — add one" in problem.message
    assert main(["validate", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().out


# --- the yaml source ---------------------------------------------------------------------------


def test_yaml_marks_point_at_keys_and_values() -> None:
    doc = parse_yaml("a:\n  b: [1, {c: 2}]\n", "x.yaml")
    assert doc.data == {"a": {"b": [1, {"c": 2}]}}
    assert doc.mark_of(("a", "b", 1, "c")) == Mark(2, 14)
    assert doc.mark_of(("a", "b"), key=True) == Mark(2, 3)
    assert doc.mark_of(("a", "b"), key=False) == Mark(2, 6)
    assert doc.mark_of(("a", "b", 1, "missing")) == Mark(2, 10)


def test_recursive_alias_is_an_error() -> None:
    with pytest.raises(ConfigError, match="recursive"):
        parse_yaml("a: &x\n  b: *x\n", "x.yaml")


# --- bascule validate ----------------------------------------------------------------------------


def test_validate_ok(deployments: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--dir", str(deployments)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[-1] for line in lines[:3]] == ["OK", "OK", "OK"]
    # Then what each environment's runs manage, and how: the two templates here.
    manifests = deployments / "manifests"
    # Where each object's document starts: its first line that is not a comment.
    start = {
        name: next(
            n
            for n, line in enumerate((manifests / name).read_text().splitlines(), 1)
            if line and not line.startswith("#")
        )
        for name in ("deployment.yaml", "service.yaml")
    }
    assert lines[3:] == [
        line
        for env in ("dev", "staging", "production")
        for line in (
            f"{env} (sample-app) manages:",
            f"  Deployment set-by-bascule ({manifests}/deployment.yaml:"
            f"{start['deployment.yaml']}): workload — one "
            "Deployment per color, sample-app-blue and sample-app-green",
            f"  Service set-by-bascule ({manifests}/service.yaml:"
            f"{start['service.yaml']}): service — the active "
            "sample-app and the preview sample-app-preview",
        )
    ]


def test_validate_reports_errors_per_file(
    deployments: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    staging = deployments / "staging.yaml"
    text = staging.read_text().replace("replicas: 2", "replicas: two")
    write(staging, text)
    assert main(["validate", "--dir", str(deployments)]) == 2
    out = capsys.readouterr().out
    assert "dev.yaml: OK" in out and "production.yaml: OK" in out
    assert f"staging.yaml:{line_of(text, 'replicas: two')}:11: replicas: " in out
    assert "nothing was changed" in out


def test_validate_named_environments(deployments: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (deployments / "production.yaml").unlink()
    assert main(["validate", "--dir", str(deployments), "dev", "staging"]) == 0
    assert main(["validate", "--dir", str(deployments), "production"]) == 2
    assert "production.yaml: file not found" in capsys.readouterr().out


def test_validate_checks_templates(deployments: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = deployments / "manifests" / "service.yaml"
    write(template, template.read_text().replace("kind: Service", "kind: Servic"))
    assert main(["validate", "--dir", str(deployments)]) == 2
    out = capsys.readouterr().out
    assert "service.yaml:" in out and "Servic set-by-bascule is refused" in out, out
    assert "no Service among the manifests" in out


def test_validate_usage_error_exit_code() -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--no-such-option"])
    assert info.value.code == 2


def test_validate_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--schema"]) == 0
    out = capsys.readouterr().out
    assert "checks.health[].expect_status (default 200)" in out
    assert "rollout.unschedulable_grace_seconds (default 30): How long a new pod" in out


BLOCKS = """\
secrets:
  DB_URL: {prefect_secret: prod-db}
  TOKEN: {env: APP_TOKEN}
notifications:
  receivers:
    - {name: team, kind: slack, webhook_url: {prefect_secret: prod-hook}}
"""


def test_a_protected_environments_prefect_secret_blocks_are_warned_of_where_written(
    deployments: Path,
) -> None:
    """Any Prefect API credential reads a block: production, always protected, is told so
    for each one, in the file that writes it; staging (not protected) is not."""
    production = deployments / "production.yaml"
    text = write(production, production.read_text() + BLOCKS).read_text()
    over = deployments / "apps" / "billing" / "production.yaml"
    over.parent.mkdir(parents=True)
    write(over, "namespace: billing-prod\nsecrets:\n  KEY: {prefect_secret: billing-key}\n")
    base, app = exposed_secrets(production), exposed_secrets(production, "billing")
    found = [
        (str(Path(w.file).relative_to(deployments)), w.mark and w.mark.line, w.field) for w in app
    ]
    db = ("production.yaml", line_of(text, "prod-db"), "secrets.DB_URL.prefect_secret")
    hook_loc = "notifications.receivers[0].webhook_url.prefect_secret"
    hook = ("production.yaml", line_of(text, "prod-hook"), hook_loc)
    assert found == [db, ("apps/billing/production.yaml", 3, "secrets.KEY.prefect_secret"), hook]
    assert [(w.mark and w.mark.line, w.field) for w in base] == [db[1:], hook[1:]]
    message, hook_message = base[0].message, base[1].message
    assert "'prod-db' can be read by any credential of the Prefect API" in message
    assert "`{env: VARIABLE}` set in the environment of `bascule worker production`" in message
    assert "`kubernetes_secret: {name, key}` in namespace bascule-production" in message
    assert "kubernetes_secret" not in hook_message  # a webhook URL has no such source
    staging = deployments / "staging.yaml"
    write(staging, staging.read_text() + BLOCKS)
    assert exposed_secrets(staging) == []


def test_empty_section_means_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "rollout:\napproval:\nchecks:\n  health:\n  smoke:\nenv:\n"
    cfg = load_environment(write(tmp_path / "staging.yaml", text))
    assert cfg.rollout.ready_timeout_seconds == 300
    assert cfg.checks.health == [] and cfg.env == {}


def test_section_of_the_wrong_shape(tmp_path: Path) -> None:
    [problem] = errors_of(write(tmp_path / "staging.yaml", MINIMAL + "rollout: 5\n")).problems
    assert problem.field == "rollout" and problem.mark is not None and problem.mark.line == 4
    assert "expected a mapping with keys from: ready_timeout_seconds" in problem.message


def test_names_allow_nothing_after_them() -> None:
    # ``re.match`` with ``$`` let a trailing newline through, as it once did for images.
    assert check_environment_name("dev") == "dev"
    with pytest.raises(UsageError, match="environment name"):
        check_environment_name("dev\n")


def test_secrets_section_sources_clashes_and_smoke_job_names(deployments: Path) -> None:
    from bascule.config import AppSecret

    base = (REPO_DEPLOYMENTS / "dev.yaml").read_text()
    good = base + (
        "secrets:\n"
        "  TOKEN: {env: DEV_TOKEN}\n"
        "  DB: {prefect_secret: dev-db, optional: true}\n"
        "  LEGACY: {kubernetes_secret: {name: legacy.keys, key: api-key}}\n"
    )
    cfg = _write_and_load(deployments, good)
    assert isinstance(cfg.secrets["LEGACY"], AppSecret)
    assert cfg.secrets["DB"].optional and not cfg.secrets["TOKEN"].optional
    assert cfg.secrets["LEGACY"].describe() == "key 'api-key' of Kubernetes Secret 'legacy.keys'"

    for text, where, says in (
        ("secrets:\n  DRAIN_SECONDS: {env: X}\n", "secrets.DRAIN_SECONDS", "also set in `env:`"),
        ("secrets:\n  T: {env: X, prefect_secret: y}\n", "secrets.T", "exactly one source"),
        ("secrets:\n  T: {value: hunter2}\n", "secrets.T.value", "unknown key"),
        (
            "secrets:\n  T: {kubernetes_secret: {name: Bad_Name, key: k}}\n",
            "secrets.T.kubernetes_secret.name",
            "not a valid Secret name",
        ),
    ):
        with pytest.raises(ConfigError) as exc:
            _write_and_load(deployments, base + text)
        problem = exc.value.problems[0]
        assert problem.field == where and says in problem.message, problem
        assert problem.mark is not None and problem.mark.line > base.count("\n")
    job = "checks:\n  smoke:\n    job: {image: x.example/s:v1, secrets: [NOPE]}\n"
    with pytest.raises(ConfigError, match="'NOPE' is not one of this environment's"):
        _write_and_load(deployments, base.split("checks:")[0] + job)


def _write_and_load(deployments: Path, text: str) -> EnvironmentConfig:
    path = deployments / "dev.yaml"
    path.write_text(text)
    return load_environment(path)


def test_promote_from_names_another_existing_environment(tmp_path: Path) -> None:
    write(tmp_path / "staging.yaml", MINIMAL)
    production = MINIMAL.replace("staging", "production")
    signed = listing_nobody(tmp_path) + evidence_from_nobody(tmp_path)
    ok = load_environment(
        write(tmp_path / "production.yaml", production + "promote_from: staging\n" + signed)
    )
    assert ok.promote_from == "staging"
    assert load_environment(tmp_path / "staging.yaml").promote_from is None
    for given, expected in (
        (
            "stagin",
            "no environment 'stagin' (stagin.yaml) beside this file (did you mean 'staging'?)",
        ),
        ("production", "'production' is this environment"),
        ("Staging", "not a valid environment name"),
    ):
        text = production + f"promote_from: {given}\n" + signed
        [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
        assert problem.field == "promote_from" and problem.mark is not None, problem
        assert problem.mark.line == 4 and expected in problem.message, problem.message


def test_repository_production_takes_only_what_staging_verified(deployments: Path) -> None:
    production = load_environment(deployments / "production.yaml")
    assert production.promote_from == "staging"
    assert production.promotion.evidence_signers == deployments / "evidence_signers"
    staging = load_environment(deployments / "staging.yaml")
    assert staging.promote_from is None
    # Staging's worker signs evidence: its migrations must not run beside its key.
    assert staging.migrations is not None and staging.migrations.runner == "job"


def test_a_protected_promote_from_needs_signers_of_the_evidence(tmp_path: Path) -> None:
    write(tmp_path / "staging.yaml", MINIMAL)
    text = MINIMAL.replace("staging", "production") + listing_nobody(tmp_path)
    text += "promote_from: staging\n"
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert problem.field == "promote_from", problem
    assert "set promotion.evidence_signers to a file listing that worker's key" in (problem.message)
    # A file that lists no key is refused too: nothing could ever be promoted.
    (tmp_path / "evidence_signers").write_text("# nobody yet\n")
    text += "promotion:\n  evidence_signers: evidence_signers\n"
    [problem] = errors_of(write(tmp_path / "production.yaml", text)).problems
    assert problem.field == "promotion.evidence_signers", problem
    assert "lists no key, and production is protected: no digest staging verified" in (
        problem.message
    )
    # An unprotected environment may trust its source's history as written.
    write(tmp_path / "qa.yaml", MINIMAL.replace("staging", "qa") + "promote_from: staging\n")
    assert load_environment(tmp_path / "qa.yaml").promotion.evidence_signers is None


# --- signed approvals ---------------------------------------------------------------------------


def test_production_lists_its_approvers_in_the_repository(deployments: Path) -> None:
    cfg = load_environment(deployments / "production.yaml")
    assert cfg.approval.allowed_signers == deployments / "allowed_signers"
    assert (cfg.approval.four_eyes, cfg.approval.min_signers) == (True, 1)
    staging = load_environment(deployments / "staging.yaml")
    assert (staging.approval.four_eyes, staging.approval.min_signers) == (False, 1)


@pytest.mark.parametrize(
    ("line", "key"),
    [("  four_eyes: true\n", "four_eyes"), ("  min_signers: 2\n", "min_signers")],
)
def test_counting_or_comparing_approvers_needs_their_keys(
    deployments: Path, line: str, key: str
) -> None:
    production = deployments / "production.yaml"
    text = production.read_text().replace("  four_eyes: true\n", "")
    text = text.replace("  allowed_signers: allowed_signers\n", line)
    write(production, text)
    message = str(errors_of(production))
    assert f"production.yaml:{line_of(text, line.strip())}:" in message
    assert f"approval.{key}: {key} compares the keys that sign approvals — set " in message
    # Without them, production is still protected: its approvals must be signed.
    write(production, text.replace(line, "  min_signers: 1\n  four_eyes: false\n"))
    assert "production is protected" in str(errors_of(production))


def test_the_schema_checks_what_the_loader_found_and_reads_no_file() -> None:
    # Paths that exist nowhere: what they hold is only what the loader says it found there.
    signers, ini = Path("/nowhere/approvers"), Path("/nowhere/alembic.ini")
    data = {
        "app": "shop",
        "environment": "staging",
        "namespace": "shop-staging",
        "approval": {"allowed_signers": str(signers)},
        "migrations": {"alembic_ini": str(ini), "database_url": {"env": "DB"}},
        "promote_from": "dev",
    }

    def problems(found: dict[Path, Found], beside: set[str]) -> str:
        around = Surroundings("staging", frozenset(beside), found)
        try:
            EnvironmentConfig.model_validate(data, context=around)
        except ValidationError as exc:
            return str(exc)
        return ""

    bad = Found("approvers", "file", "ann@example.com ssh-ed25519\n")
    message = problems({signers: bad, ini: Found("i.ini", "dir")}, {"staging", "prod"})
    assert "approvers:1: not an allowed_signers line" in message
    assert "i.ini does not exist — fix the path" in message
    assert "no environment 'dev' (dev.yaml) beside this file — name one of prod" in message
    good = Found("approvers", "file", NOBODY + "\n")
    assert problems({signers: good, ini: Found("i.ini", "file")}, {"dev", "staging"}) == ""


def test_allowed_signers_errors_name_the_file_and_line(deployments: Path) -> None:
    production = deployments / "production.yaml"
    text = production.read_text()
    where = f"production.yaml:{line_of(text, 'allowed_signers: allowed_signers')}:20"
    write(production, text.replace("allowed_signers: allowed_signers", "allowed_signers: nobody"))
    message = str(errors_of(production))
    assert f"{where}: approval.allowed_signers: " in message
    assert "nobody does not exist — fix the path (relative to this file)" in message
    write(production, text)
    signers = deployments / "allowed_signers"
    write(signers, signers.read_text() + "ann@example.com ssh-ed25519\n")
    message = str(errors_of(production))
    assert f"{where}: approval.allowed_signers: " in message
    assert (
        f"allowed_signers:{line_of(signers.read_text(), 'ann@')}: not an allowed_signers line"
        in (message)
    )


def test_production_on_typed_names_is_an_error_elsewhere_a_warning(
    deployments: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    production = deployments / "production.yaml"
    text = production.read_text()
    typed = text.replace("  allowed_signers: allowed_signers\n", "")
    write(production, typed.replace("  four_eyes: true\n", ""))
    assert main(["validate", "--dir", str(deployments), "production"]) == 2
    out = capsys.readouterr().out
    assert (
        f"production.yaml:{line_of(text, 'approval:')}:1: approval: production is protected" in out
    )
    assert "warning" not in out
    staging = deployments / "staging.yaml"
    text = staging.read_text().replace("  required: false", "  required: true")
    write(staging, text)
    assert main(["validate", "--dir", str(deployments), "staging"]) == 0
    out = capsys.readouterr().out
    assert f"staging.yaml:{line_of(text, 'approval:')}:1: approval: warning: staging's " in out
    assert "approvals are typed names" in out and "`protected: true` to make that a rule" in out


# --- the preview link ---------------------------------------------------------------------------


def test_preview_url_renders_its_placeholders_for_one_release(tmp_path: Path) -> None:
    url = "https://{app}-{color}.{environment}.example/{namespace}/{release}"
    cfg = load_environment(write(tmp_path / "staging.yaml", MINIMAL + f"preview:\n  url: {url}\n"))
    values = analysis.placeholders(
        "shop-staging", "shop", "staging", "green", "r20261128-abc123", "blue", "r1"
    )
    assert cfg.preview.link(values) == (
        "https://shop-green.staging.example/shop-staging/r20261128-abc123"
    )
    assert load_environment(write(tmp_path / "staging.yaml", MINIMAL)).preview.link(values) is None


def test_repository_previews_are_links_people_can_open(deployments: Path) -> None:
    values = analysis.placeholders("ns", "sample-app", "production", "green", "r1", None, None)
    for env in ("staging", "production"):
        link = load_environment(deployments / f"{env}.yaml").preview.link(values)
        assert link == f"https://sample-app-preview.{env}.example/"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://{app}.{old_color}.example", "unknown placeholder {old_color} — use one of {app}"),
        ("https://{app.example", "a brace that is no placeholder"),
        ("ftp://{app}.example", "not an http(s) URL"),
        ("{app}.example", "not an http(s) URL"),
        ("https://ann:pw@{app}.example", "credentials in the URL are not supported"),
    ],
)
def test_a_bad_preview_url_names_file_line_and_what_to_write(
    tmp_path: Path, url: str, says: str
) -> None:
    text = MINIMAL + f"preview:\n  url: '{url}'\n"
    [problem] = errors_of(write(tmp_path / "staging.yaml", text)).problems
    assert problem.field == "preview.url" and says in problem.message, problem
    assert problem.mark is not None and problem.mark.line == line_of(text, "url:")
    assert url not in str(problem)  # it may hold a password: not echoed
