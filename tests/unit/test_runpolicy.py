"""The rules an environment's worker checks a run against (bascule/runpolicy.py): decisions
on plain data. The attacks themselves, through the real API and workers, are
tests/integration/test_threats.py's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bascule.runpolicy import (
    ENTRYPOINTS,
    Checkout,
    Policy,
    Submitted,
    check_checkout,
    check_run,
    config_path,
    pool_name,
)

PRODUCTION = Policy(
    "production", "https://git.example/acme/bascule.git", namespaces=frozenset({"prod"})
)
DEV = Policy("dev", "https://git.example/acme/bascule.git")
SHA = "0123456789abcdef0123456789abcdef01234567"


def run(**changes: Any) -> Submitted:
    base = Submitted(
        flow_name="deploy",
        parameters={"environment": "production", "image": "app:v1", "commit": SHA},
        deployment="deploy/production",
        entrypoint=ENTRYPOINTS["deploy"],
    )
    return replace(base, **changes)


def rule_of(policy: Policy, submitted: Submitted) -> str | None:
    refusal = check_run(policy, submitted)
    return None if refusal is None else refusal.rule


def test_a_run_of_the_shipped_deployment_passes() -> None:
    assert check_run(PRODUCTION, run()) is None
    assert check_run(PRODUCTION, run(parameters={"environment": "production"})) is None
    assert pool_name("production") == PRODUCTION.pool == "bascule-production"


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"deployment": None}, "deployment"),
        ({"flow_name": "anything"}, "flow"),
        ({"entrypoint": "evil.py:deploy"}, "entrypoint"),
        ({"entrypoint": ENTRYPOINTS["rollback"]}, "entrypoint"),
        ({"pull_steps": [{"prefect.deployments.steps.run_shell_script": {}}]}, "pull-steps"),
        ({"command": "sh -c env"}, "command"),
        ({"env": {"BASCULE_REPOSITORY": "x"}}, "env"),
        ({"parameters": {"environment": "dev"}}, "environment"),
        ({"parameters": {"environment": "../../x/production"}}, "environment"),
        ({"parameters": {"environment": "production", "config_dir": "/tmp/x"}}, "config-dir"),
        ({"parameters": {"environment": "production", "commit": "main"}}, "commit"),
        ({"parameters": {"environment": "production", "commit": "--upload-pack=x"}}, "commit"),
    ],
)
def test_what_a_run_may_not_set_is_refused_by_rule(changes: dict[str, Any], rule: str) -> None:
    refusal = check_run(PRODUCTION, run(**changes))
    assert refusal is not None and refusal.rule == rule
    message = refusal.message("production")
    assert message.startswith(f"refused by the production worker, rule {rule}: ")
    assert " — " in message  # and what to do


def test_config_dir_may_be_given_as_the_worker_has_it() -> None:
    same = {"environment": "production", "config_dir": PRODUCTION.config_dir}
    assert check_run(PRODUCTION, run(parameters=same)) is None


def checkout(**changes: Any) -> Checkout:
    base = Checkout(
        commit=SHA, on_default_branch=True, serving={"app": ("a" * 40, True)}, namespaces={"prod"}
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"found": False}, "commit"),
        ({"on_default_branch": False}, "default-branch"),
        ({"serving": {"app": ("a" * 40, False)}}, "no-downgrade"),
        ({"namespaces": {"prod", "other"}}, "namespace"),
        ({"credential_fields": ["kube.kubeconfig"]}, "credentials"),
    ],
)
def test_what_a_protected_environments_checkout_may_not_be(
    changes: dict[str, Any], rule: str
) -> None:
    assert check_checkout(PRODUCTION, checkout()) is None
    refusal = check_checkout(PRODUCTION, checkout(**changes))
    assert refusal is not None and refusal.rule == rule


def test_an_unprotected_environment_runs_branches_and_older_commits() -> None:
    branch = checkout(on_default_branch=False, serving={"app": ("a" * 40, False)})
    assert check_checkout(DEV, branch) is None
    assert check_checkout(replace(DEV, protected=True), branch) is not None
    # Nothing recorded a commit yet: nothing to descend from.
    assert check_checkout(PRODUCTION, checkout(serving={"app": None})) is None


def test_the_config_directory_stays_inside_the_checkout() -> None:
    assert str(config_path("deployments")) == "deployments"
    for bad in ("/etc/bascule", "../x", "deployments/../../x"):
        with pytest.raises(ValueError, match="inside the checkout"):
            config_path(bad)
