"""The rules an environment's worker checks a run against (bascule/runpolicy.py), and a
Kubernetes worker the Job a run would get (bascule/jobpolicy.py): decisions on plain data.
The attacks themselves, through the real API and workers, are tests/integration/test_threats.py's
and test_kubernetes_jobs.py's."""

from __future__ import annotations

import argparse
import asyncio
import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from bascule import workpool
from bascule.cli import worker
from bascule.jobpolicy import IN_IMAGE_PULL_STEPS, JobPolicy, check_job, check_kubernetes_run
from bascule.kubeworker import JobConfiguration
from bascule.runpolicy import (
    ENTRYPOINTS,
    Checkout,
    Policy,
    Submitted,
    check_checkout,
    check_run,
    config_path,
    kubernetes_pool_name,
    pool_name,
)
from tests.unit.test_workpool import DEFAULT, rendered

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


def test_one_apps_worker_runs_only_that_app_from_its_own_pool() -> None:
    shop = replace(PRODUCTION, app="shop")
    assert (shop.pool, pool_name("production", "shop")) == ("bascule-shop.production",) * 2
    assert kubernetes_pool_name("production", "shop") == "bascule-shop.production-kubernetes"
    for parameters in ({"app": "shop"}, {}):
        assert check_run(shop, run(parameters={"environment": "production", **parameters})) is None
    refusal = check_run(shop, run(parameters={"environment": "production", "app": "cart"}))
    assert refusal is not None and refusal.rule == "app"
    assert "bascule-cart.production" in refusal.message("production")
    # Its repository's configuration must hold the app; an environment's worker has no say.
    assert check_checkout(shop, checkout(apps={"shop", "shop-admin"})) is None
    missing = check_checkout(shop, checkout(apps={"cart"}))
    assert missing is not None and missing.rule == "app"
    assert "has no app 'shop' (cart)" in missing.why
    assert check_checkout(PRODUCTION, checkout(apps={"cart"})) is None


def test_the_config_directory_stays_inside_the_checkout() -> None:
    assert str(config_path("deployments")) == "deployments"
    for bad in ("/etc/bascule", "../x", "deployments/../../x"):
        with pytest.raises(ValueError, match="inside the checkout"):
            config_path(bad)


# The Kubernetes worker (bascule/jobpolicy.py): the run, and the Job it would create.
IMAGE = "bascule.local/bascule-flows:0123456789ab"
POD_API = "http://prefect.bascule-system:4200/api"
STAGING = JobPolicy(Policy("staging", IMAGE, namespaces=frozenset({"app-staging"})), IMAGE, POD_API)
TEMPLATE = workpool.job_template(DEFAULT, workpool.JobSettings(IMAGE, POD_API, "app-staging"))


def job_rule(template: dict[str, Any] = TEMPLATE, **job_variables: Any) -> str | None:
    refusal = check_job(STAGING, rendered(template, **job_variables))
    return None if refusal is None else refusal.rule


def edited(change: Callable[[dict[str, Any], dict[str, Any]], None]) -> dict[str, Any]:
    """Bascule's template with ``change(pod, container)`` made to its Job, as an API
    credential can edit a pool's base job template."""
    template = copy.deepcopy(TEMPLATE)
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    change(pod, pod["containers"][0])
    return template


def test_the_job_of_bascules_template_passes() -> None:
    assert job_rule() is None
    assert job_rule(namespace="app-staging", image_pull_policy="Never") is None
    assert kubernetes_pool_name("staging") == "bascule-staging-kubernetes"


@pytest.mark.parametrize(
    ("job_variables", "rule"),
    [
        ({"image": "attacker/flows:evil"}, "image"),
        ({"namespace": "app-production"}, "namespace"),
        ({"service_account_name": "default"}, "service-account"),
        ({"command": "sh -c 'cat /var/run/secrets/*/token'"}, "command"),
        ({"command": None}, "command"),
        ({"env": {"PREFECT_API_URL": "http://attacker/api"}}, "env"),
        ({"env": {**STAGING.env(), "BASCULE_REPOSITORY": "x"}}, "env"),
        ({"labels": {"app": "sample-app", "color": "blue"}}, "labels"),
        ({"annotations": {"x": "y"}}, "labels"),
        ({"cluster_config": {"config": {}, "context_name": "prod"}}, "cluster"),
    ],
)
def test_what_a_run_may_not_set_in_its_job_is_refused_by_rule(
    job_variables: dict[str, Any], rule: str
) -> None:
    assert job_rule(**job_variables) == rule


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda pod, c: pod.update(initContainers=[{"name": "x", "image": "busybox"}]), "job"),
        (lambda pod, c: pod.update(hostNetwork=True), "job"),
        (lambda pod, c: pod["containers"].append(dict(c, name="sidecar")), "containers"),
        (lambda pod, c: c.update(command=["sh", "-c", "env"]), "container"),
        (lambda pod, c: c.update(envFrom=[{"secretRef": {"name": "prod"}}]), "container"),
        (lambda pod, c: c.update(image="attacker/flows:evil"), "image"),
        (lambda pod, c: c.update(args="sh -c env"), "command"),
        (lambda pod, c: c.update(workingDir="/tmp"), "working-dir"),
        (lambda pod, c: pod.update(serviceAccountName="admin"), "service-account"),
        (
            lambda pod, c: pod["volumes"].append({"name": "s", "secret": {"secretName": "x"}}),
            "volumes",
        ),
        (lambda pod, c: c["volumeMounts"].append({"name": "x", "mountPath": "/x"}), "volumes"),
        (lambda pod, c: c.update(env=[{"name": "T", "valueFrom": {"secretKeyRef": {}}}]), "env"),
        (lambda pod, c: c["securityContext"].update(runAsNonRoot=False), "security-context"),
    ],
)
def test_what_a_pools_template_may_not_give_the_job_is_refused_by_rule(
    change: Callable[[dict[str, Any], dict[str, Any]], None], rule: str
) -> None:
    assert job_rule(edited(change)) == rule


def test_a_kubernetes_run_may_keep_only_the_images_directory_as_pull_step() -> None:
    kube = run(parameters={"environment": "staging"}, deployment="deploy/staging-kubernetes")
    assert check_kubernetes_run(STAGING.run, kube) is None
    assert check_kubernetes_run(STAGING.run, replace(kube, pull_steps=IN_IMAGE_PULL_STEPS)) is None
    clone = [{"prefect.deployments.steps.git_clone": {"repository": "https://evil"}}]
    refused = check_kubernetes_run(STAGING.run, replace(kube, pull_steps=clone))
    assert refused is not None and refused.rule == "pull-steps"
    production = check_kubernetes_run(
        STAGING.run, replace(kube, parameters={"environment": "production"})
    )
    assert production is not None and production.rule == "environment"


def test_the_job_as_prefects_worker_resolves_it_passes() -> None:
    """The same check on the configuration prefect-kubernetes makes of the template (empty
    labels and annotations kept), as bascule/kubeworker.py hands it over."""
    configuration = asyncio.run(
        JobConfiguration.from_template_and_values(TEMPLATE, {}, client=object())
    )
    assert check_job(STAGING, configuration.resolved()) is None
    configuration.job_manifest["metadata"]["labels"] = {"app": "sample-app"}
    refused = check_job(STAGING, configuration.resolved())
    assert refused is not None and refused.rule == "labels"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["dev"], "--repository is required"),
        (["dev", "--kubernetes", "--namespace", "app-dev"], "--kubernetes needs --image"),
        (["dev", "--kubernetes", "--image", IMAGE], "--kubernetes needs --image"),
        (["dev", "--repository", "r", "--config-dir", "/etc/x"], "inside the checkout"),
        (
            ["dev", "--kubernetes", "--image", IMAGE, "--namespace", "a", "--api-url", "x:1"],
            "not an http(s) URL",
        ),
    ],
)
def test_a_worker_without_its_settings_does_not_start(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    worker.add_arguments(parser)
    assert worker.run(parser.parse_args(argv)) == 2
    assert problem in capsys.readouterr().err
