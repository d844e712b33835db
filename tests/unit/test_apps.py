"""Several apps per environment: the overlay files, and which app a command means."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bascule.apps import choose_app, overlay
from bascule.cli import main
from bascule.cli.options import resolve_app
from bascule.config import ConfigError
from bascule.config_files import app_names, load_apps, load_environment
from bascule.errors import UsageError
from bascule.trigger.options import idempotency_key, local_app
from tests.support.envs import copy_deployments


@pytest.fixture
def deployments(tmp_path: Path) -> Path:
    return copy_deployments(tmp_path)


def add_app(deployments: Path, app: str, env: str, text: str) -> Path:
    path = deployments / "apps" / app / f"{env}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_overlay_merges_mappings_and_replaces_the_rest() -> None:
    base = {"replicas": 2, "rollout": {"a": 1, "b": 2}, "checks": {"health": [1, 2]}}
    over = {"replicas": 1, "rollout": {"b": 3}, "checks": {"health": [9]}}
    assert overlay(base, over) == {
        "replicas": 1,
        "rollout": {"a": 1, "b": 3},
        "checks": {"health": [9]},
    }
    assert base["rollout"] == {"a": 1, "b": 2}  # the base is left as it was


def test_choose_app() -> None:
    assert choose_app("dev", None, ["sample-app"]) == "sample-app"
    assert choose_app("dev", "api", ["sample-app", "api"]) == "api"
    with pytest.raises(UsageError, match=r"several apps \(sample-app, api\).*--app"):
        choose_app("dev", None, ["sample-app", "api"])
    with pytest.raises(UsageError, match=r"no app 'apx' \(did you mean 'api'\?\)"):
        choose_app("dev", "apx", ["sample-app", "api"])


def test_an_app_overlays_its_environment_file(deployments: Path) -> None:
    add_app(deployments, "sample-api", "dev", "replicas: 3\nrollout:\n  ready_timeout_seconds: 7\n")
    base = load_environment(deployments / "dev.yaml")
    cfg = load_environment(deployments / "dev.yaml", "sample-api")
    assert (cfg.app, cfg.replicas, cfg.namespace) == ("sample-api", 3, base.namespace)
    assert cfg.rollout.ready_timeout_seconds == 7
    assert cfg.rollout.progress_deadline_seconds == base.rollout.progress_deadline_seconds
    assert cfg.checks == base.checks and cfg.manifests == base.manifests
    # Its own app named explicitly is the environment file alone.
    assert load_environment(deployments / "dev.yaml", base.app) == base
    assert app_names(deployments, "dev") == [base.app, "sample-api"]
    assert app_names(deployments, "staging") == [base.app]


def test_an_overlays_paths_are_relative_to_it(deployments: Path) -> None:
    manifests = deployments / "apps" / "sample-api" / "manifests"
    manifests.mkdir(parents=True)
    add_app(deployments, "sample-api", "dev", "manifests: manifests\n")
    cfg = load_environment(deployments / "dev.yaml", "sample-api")
    assert cfg.manifests.path == manifests.absolute()


def test_an_error_in_an_overlay_names_the_overlays_line(deployments: Path) -> None:
    path = add_app(deployments, "sample-api", "dev", "# api\nreplicas: -1\nimage: nope nope\n")
    add_app(deployments, "other", "dev", "app: wrong\n")
    with pytest.raises(ConfigError) as info:
        load_environment(deployments / "dev.yaml", "sample-api")
    found = {(p.file, p.field, p.mark.line if p.mark else 0) for p in info.value.problems}
    assert found == {(str(path), "replicas", 2), (str(path), "image", 3)}
    with pytest.raises(ConfigError) as info:
        load_apps(deployments, ["dev", "staging", "production"])
    assert [(p.field, Path(p.file).parent.name) for p in info.value.problems] == [
        ("app", "other"),
        ("replicas", "sample-api"),
        ("image", "sample-api"),
    ]


def test_the_environment_files_own_app_has_no_overlay(deployments: Path) -> None:
    add_app(deployments, "sample-app", "dev", "replicas: 5\n")
    with pytest.raises(ConfigError, match=r"dev\.yaml's own app"):
        load_apps(deployments, ["dev"])


def test_an_apps_directory_must_be_an_app_name(deployments: Path) -> None:
    add_app(deployments, "Bad_Name", "dev", "")
    with pytest.raises(ConfigError) as info:
        load_apps(deployments, ["dev"])
    (problem,) = info.value.problems
    assert problem.file.endswith("apps/Bad_Name/dev.yaml")
    assert "rename the directory" in str(problem)


def test_an_overlay_that_breaks_a_rule_across_fields_is_reported(deployments: Path) -> None:
    """The rule's field is written in the environment file, but the overlay broke it."""
    add_app(deployments, "sample-api", "dev", "verification:\n  window_seconds: 500\n")
    with pytest.raises(ConfigError, match="scale_down_delay_seconds"):
        load_apps(deployments, ["dev"])


def test_validate_checks_every_app(deployments: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_app(deployments, "sample-api", "dev", "replicas: 1\n")
    add_app(deployments, "sample-api", "qa", "replicas: 1\n")
    assert main(["validate", "--dir", str(deployments)]) == 2
    out = capsys.readouterr().out
    assert "apps/sample-api/dev.yaml: OK" in out
    assert "apps/sample-api/qa.yaml: there is no environment 'qa'" in out


def test_commands_need_the_app_only_where_there_are_several(deployments: Path) -> None:
    def args(app: str | None) -> argparse.Namespace:
        return argparse.Namespace(environment="dev", dir=deployments, app=app)

    assert resolve_app(args(None)) == "sample-app"
    add_app(deployments, "sample-api", "dev", "")
    assert resolve_app(args("sample-api")) == "sample-api"
    with pytest.raises(UsageError, match="several apps"):
        resolve_app(args(None))
    assert main(["deploy", "dev", "--dir", str(deployments)]) == 2
    assert main(["history", "dev", "--dir", str(deployments), "--app", "nope"]) == 2


def test_trigger_names_the_app_in_parameters_and_key(deployments: Path) -> None:
    assert local_app("dev", None, deployments) is None  # the flow's default: nothing to pass
    add_app(deployments, "sample-api", "dev", "")
    assert local_app("dev", "sample-api", deployments) == "sample-api"
    with pytest.raises(UsageError, match="several apps"):
        local_app("dev", None, deployments)
    assert local_app("dev", "x", deployments / "elsewhere") == "x"  # the flow checks it
    key = idempotency_key("dev", None, "app:v1")
    assert idempotency_key("dev", None, "app:v1", app="sample-api") != key
