"""The Kubernetes work pool's job template (bascule/workpool.py), rendered as the worker
renders it from prefect-kubernetes' own default, and the Jobs' exit code (flows/job.py)."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest
from prefect.utilities.templating import apply_values
from prefect_kubernetes.worker import KubernetesWorker

from bascule import workpool
from bascule.cli import workpool as cli
from bascule.flows import job
from bascule.flows.launch import LAUNCH
from bascule.manifests import RESTRICTED_CONTAINER
from bascule.outcome import Exit
from bascule.runpolicy import ENTRYPOINTS

DEFAULT = KubernetesWorker.get_default_base_job_template()
SETTINGS = workpool.JobSettings(
    "bascule.local/bascule-flows:0123456789ab",
    "http://prefect.bascule-system:4200/api",
    namespace="bascule-staging",
    pull_policy="Never",
)


def rendered(template: dict[str, Any], **job_variables: Any) -> dict[str, Any]:
    """The job configuration a run gets: the variables' defaults, then its job variables
    (replacing whole values, as Prefect merges them)."""
    props = template["variables"]["properties"]
    values = {name: p["default"] for name, p in props.items() if "default" in p}
    values.update(job_variables)
    return dict(apply_values(template["job_configuration"], values))


def test_jobs_get_the_flow_image_the_account_and_the_server_pods_reach() -> None:
    config = rendered(workpool.job_template(DEFAULT, SETTINGS))
    manifest = config["job_manifest"]
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == SETTINGS.image
    assert container["imagePullPolicy"] == "Never"
    assert container["args"] == workpool.COMMAND
    assert container["workingDir"] == workpool.WORKDIR
    assert pod["serviceAccountName"] == workpool.SERVICE_ACCOUNT
    assert manifest["metadata"]["namespace"] == config["namespace"] == "bascule-staging"
    assert config["env"] == {
        "PREFECT_API_URL": SETTINGS.api_url,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(workpool.HEARTBEAT_SECONDS),
    }
    # No kubeconfig: the ServiceAccount's token is all the flows get; the environments'
    # files from an optional ConfigMap.
    assert pod["volumes"] == [
        {"name": "deployments", "configMap": {"name": workpool.CONFIG_MAP, "optional": True}}
    ]
    assert container["volumeMounts"][0]["mountPath"] == workpool.CONFIG_MOUNT
    assert "cluster_config" not in {k for k, v in config.items() if v}
    assert pod["securityContext"] == {"runAsNonRoot": True}
    # Admitted where Pod Security `restricted` is enforced, as app namespaces do.
    assert container["securityContext"] == dict(RESTRICTED_CONTAINER)


def test_a_run_picks_its_namespace_and_image_and_keeps_the_rest() -> None:
    config = rendered(
        workpool.job_template(DEFAULT, SETTINGS),
        namespace="shop-production",
        image="bascule.local/bascule-flows:fedcba987654",
    )
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    assert config["job_manifest"]["metadata"]["namespace"] == "shop-production"
    assert pod["containers"][0]["image"] == "bascule.local/bascule-flows:fedcba987654"
    assert pod["serviceAccountName"] == "bascule"
    assert config["env"]["PREFECT_API_URL"] == SETTINGS.api_url


def test_the_default_template_is_left_as_it_was() -> None:
    before = copy.deepcopy(DEFAULT)
    workpool.job_template(DEFAULT, SETTINGS)
    assert before == DEFAULT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("job_configuration"), "not a Kubernetes base job template"),
        (lambda t: t["variables"]["properties"].pop("image"), "no variable 'image'"),
    ],
)
def test_a_template_that_is_not_prefect_kubernetes_is_refused(change: Any, message: str) -> None:
    template = copy.deepcopy(DEFAULT)
    change(template)
    with pytest.raises(ValueError, match=message):
        workpool.job_template(template, SETTINGS)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="pull policy 'Sometimes'"):
        workpool.JobSettings("img", "http://p/api", pull_policy="Sometimes")
    with pytest.raises(ValueError, match="not an http"):
        workpool.JobSettings("img", "prefect:4200/api")


class FakeEngine:
    """`python -m prefect.engine` in the image's code directory, exiting with ``returncode``."""

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode

    def __call__(self, argv: list[str], cwd: str) -> FakeEngine:
        assert (tuple(argv[1:]), cwd) == (LAUNCH, workpool.WORKDIR)
        return self

    def wait(self) -> int:
        return self.returncode

    def send_signal(self, number: int) -> None:
        raise AssertionError("no signal expected")


@pytest.mark.parametrize(
    ("engine", "final", "expected"),
    [
        (1, Exit.ROLLED_BACK, 3),  # the engine says 1 for every failed run
        (1, Exit.FAILED, 1),
        (0, Exit.COMPLETED, 0),
        (0, None, 0),  # paused or rescheduled: not ended, the engine's code
    ],
)
def test_the_job_exits_as_bascule_deploy(
    monkeypatch: pytest.MonkeyPatch, engine: int, final: Exit | None, expected: int
) -> None:
    monkeypatch.setenv(job.RUN_ID_ENV, "8a6e0a52-4ea4-4e3c-9a0b-6b1f1d1f6c11")
    monkeypatch.setenv(job.ENTRYPOINT_ENV, ENTRYPOINTS["deploy"])
    monkeypatch.setattr(subprocess, "Popen", FakeEngine(engine))
    monkeypatch.setattr(job.signal, "signal", lambda *args: None)  # pytest's handlers stay
    monkeypatch.setattr(job, "final_exit", lambda run_id: final)
    assert job.main() == expected


def test_without_a_run_the_job_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(job.RUN_ID_ENV, raising=False)
    assert job.main() == Exit.USAGE


@pytest.mark.parametrize("entrypoint", [None, "evil.py:deploy", "bascule.flows.deploy:other"])
def test_without_one_of_bascules_entrypoints_the_job_runs_nothing(
    monkeypatch: pytest.MonkeyPatch, entrypoint: str | None
) -> None:
    """The worker sets the entrypoint; a Job without one of Bascule's (another worker's, a
    hand-made one) starts no engine, which would load the deployment's instead."""
    monkeypatch.setenv(job.RUN_ID_ENV, "8a6e0a52-4ea4-4e3c-9a0b-6b1f1d1f6c11")
    if entrypoint is None:
        monkeypatch.delenv(job.ENTRYPOINT_ENV, raising=False)
    else:
        monkeypatch.setenv(job.ENTRYPOINT_ENV, entrypoint)
    monkeypatch.setattr(subprocess, "Popen", None)  # calling it would fail the test
    assert job.main() == Exit.USAGE


def test_the_command_prints_the_template_for_prefect_work_pool_create(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--image", SETTINGS.image, "--api-url", SETTINGS.api_url, "--pull-policy", "Never"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == workpool.job_template(
        DEFAULT, workpool.JobSettings(SETTINGS.image, SETTINGS.api_url, pull_policy="Never")
    )


def test_the_command_refuses_a_bad_url_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--image", "img", "--api-url", "prefect:4200/api"])
    assert exited.value.code == 2
    assert "PREFECT_API_URL 'prefect:4200/api' is not an http(s) URL" in capsys.readouterr().err
