"""Checks on the GitHub workflows: actionlint and zizmor with zero findings, and the rules the
deploy workflows promise (pinned actions, least privilege, no expressions inside scripts, one
concurrency group per app and environment)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
REUSABLE = "./.github/workflows/_deploy.yml"
CALLERS = {
    "deploy-dev.yml": "dev",
    "deploy-staging.yml": "staging",
    "deploy-production.yml": "production",
}
# Action pins: a full commit SHA, with the release it is in as a comment for the reader.
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def load(name: str) -> dict[str, Any]:
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def all_workflows() -> list[str]:
    return sorted(path.name for path in WORKFLOWS.glob("*.yml"))


def steps_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def deploy_job(name: str) -> dict[str, Any]:
    """The caller's job that runs the reusable deploy workflow."""
    (job,) = (job for job in load(name)["jobs"].values() if "uses" in job)
    return job


def run_step(
    step: dict[str, Any], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A step's script, run as a GitHub runner runs it (bash -eo pipefail), with ``env``
    standing for the step's `env:` expressions."""
    script = cwd / "step.sh"
    script.write_text(step["run"])
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        timeout=60,
    )


# --- linters --------------------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    built = subprocess.run(
        [str(REPO / "scripts" / "install-actionlint.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, f"building actionlint failed:\n{built.stderr}"
    actionlint = built.stdout.strip().splitlines()[-1]
    result = subprocess.run(
        [actionlint, "-color=false", *(str(WORKFLOWS / name) for name in all_workflows())],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _zizmor() -> str:
    # The one installed next to this Python (the project's venv), else the one on PATH.
    beside = Path(sys.executable).with_name("zizmor")
    found = str(beside) if beside.exists() else shutil.which("zizmor")
    if found is None:
        pytest.fail("zizmor is not installed: pip install -e '.[dev]'")
    return found


def test_zizmor_finds_nothing() -> None:
    # Offline and without a token: the audits that would ask GitHub's API are skipped.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"}
    }
    result = subprocess.run(
        [_zizmor(), "--offline", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    findings = json.loads(result.stdout or "[]")
    summary = [
        f"{f['ident']}: {f['desc']} at {loc['symbolic']['key']} {loc['concrete']['location']}"
        for f in findings
        for loc in f["locations"][:1]
    ]
    assert findings == [], "\n".join(summary) + result.stderr
    assert result.returncode == 0, result.stderr


def test_inline_zizmor_ignores_say_why() -> None:
    for name in all_workflows():
        lines = (WORKFLOWS / name).read_text().splitlines()
        for number, line in enumerate(lines):
            if "zizmor: ignore[" in line:
                above = lines[number - 1].strip()
                assert above.startswith("#") and len(above) > 20, (
                    f"{name}:{number + 1}: an inline zizmor ignore needs a comment saying why"
                )


# --- the rules of the deploy workflows -------------------------------------------------------


def test_three_environment_workflows_call_the_reusable_one() -> None:
    assert set(CALLERS) <= set(all_workflows())
    for name, environment in CALLERS.items():
        job = deploy_job(name)
        assert job["uses"] == REUSABLE
        assert job["with"]["environment"] == environment
        assert "secrets" not in job, "secrets come from the GitHub environment, not the caller"


def test_triggers() -> None:
    dev, staging, production = (load(name)["on"] for name in CALLERS)
    assert dev["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in dev
    assert staging["release"] == {"types": ["published"]}
    assert "workflow_dispatch" in staging
    assert set(production) == {"workflow_dispatch"}
    image = production["workflow_dispatch"]["inputs"]["image"]
    assert image["required"] is True
    assert "sha256" in image["description"]
    assert deploy_job("deploy-production.yml")["with"]["require-digest"] is True


def test_reusable_workflow() -> None:
    doc = load("_deploy.yml")
    assert set(doc["on"]) == {"workflow_call"}
    (job,) = doc["jobs"].values()
    assert job["environment"]["name"] == "${{ inputs.environment }}"
    assert job["concurrency"] == {
        "group": "bascule-deploy-${{ inputs.environment }}-${{ inputs.app }}",
        "cancel-in-progress": False,
    }
    assert "timeout-minutes" in job
    steps = job["steps"]
    app, bascule = (s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert app["with"] == {"persist-credentials": False}  # the caller's commit: configuration
    # Bascule's code from the release the caller pins, never from the app's repository.
    assert bascule["with"] == {
        "repository": "${{ inputs.bascule-repository || github.repository }}",
        "ref": "${{ inputs.bascule-version || github.sha }}",
        "path": ".bascule",
        "persist-credentials": False,
    }
    assert any(s.get("uses", "").startswith("actions/setup-python@") for s in steps)
    install = next(s for s in steps if s.get("name") == "Install Bascule")
    assert install["working-directory"] == ".bascule"
    assert re.search(r"pip install [\w= -]*\.$", install["run"].strip())
    runs = [s["run"] for s in steps if "run" in s]
    assert any("--check" in run and '--image "$IMAGE"' in run for run in runs)
    trigger = next(s for s in steps if s.get("id") == "trigger")
    assert (
        'bascule trigger "$ENVIRONMENT" --image "$IMAGE" --commit "$GITHUB_SHA"' in trigger["run"]
    )
    assert trigger["env"]["PREFECT_API_URL"] == "${{ vars.PREFECT_API_URL }}"
    assert trigger["env"]["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"
    assert trigger["env"]["PREFECT_API_AUTH_STRING"] == "${{ secrets.PREFECT_API_AUTH_STRING }}"


@pytest.mark.parametrize("name", ["_deploy.yml", *CALLERS])
def test_least_privilege(name: str) -> None:
    doc = load(name)
    assert doc["permissions"] == {}
    for job in doc["jobs"].values():
        deploys = "uses" in job or "environment" in job
        # The jobs that only check something before the deploy read nothing, not even code.
        assert job["permissions"] == ({"contents": "read"} if deploys else {}), job["name"]


@pytest.mark.parametrize("name", ["_deploy.yml", *CALLERS])
def test_no_expressions_inside_scripts(name: str) -> None:
    # Untrusted input (tags, inputs) reaches scripts only through env: an expression in a
    # script is pasted into the shell before it runs.
    for step in steps_of(load(name)):
        if "run" in step:
            assert "${{" not in step["run"], f"{name}: step {step.get('name')!r}"


@pytest.mark.parametrize("name", ["_deploy.yml", *CALLERS])
def test_actions_pinned_to_full_commit_shas(name: str) -> None:
    for line in (WORKFLOWS / name).read_text().splitlines():
        match = re.match(r"^\s*(?:- )?uses:\s*(.+)$", line)
        if match is None or match.group(1).startswith("./"):
            continue
        assert PINNED.match(match.group(1)), f"{name}: not pinned to a commit SHA: {line.strip()}"


def test_secrets_only_where_used() -> None:
    (job,) = load("_deploy.yml")["jobs"].values()
    assert "env" not in job, "no job-wide env: secrets go to the steps that need them"
    for step in job["steps"]:
        uses_secret = any("secrets." in str(value) for value in step.get("env", {}).values())
        assert uses_secret == ("bascule trigger" in step.get("run", "")), step.get("name")


# --- the policy: production from main only, dev after its image exists ----------------------


def test_production_deploy_needs_the_main_only_check() -> None:
    doc = load("deploy-production.yml")
    check = doc["jobs"]["main-only"]
    assert deploy_job("deploy-production.yml")["needs"] == "main-only"
    assert "environment" not in check, "checked before reviewers are asked or secrets exist"
    (step,) = check["steps"]
    assert step["env"] == {"REF": "${{ github.ref }}"}


@pytest.mark.parametrize(
    ("ref", "allowed"),
    [
        ("refs/heads/main", True),
        ("refs/heads/feature", False),
        ("refs/heads/main-hotfix", False),
        ("refs/heads/x/refs/heads/main", False),
        ("refs/tags/v1.0.0", False),
        ("refs/pull/7/merge", False),
    ],
)
def test_main_only_check(tmp_path: Path, ref: str, allowed: bool) -> None:
    (step,) = load("deploy-production.yml")["jobs"]["main-only"]["steps"]
    result = run_step(step, {"REF": ref}, tmp_path)
    assert (result.returncode == 0) == allowed, result.stdout + result.stderr
    if not allowed:
        assert result.stdout.startswith("::error title=Production deploys only from main::")
        assert ref in result.stdout and "Use workflow from: main" in result.stdout


def test_dev_deploy_deploys_the_image_it_waited_for() -> None:
    doc = load("deploy-dev.yml")
    image = doc["jobs"]["image"]
    deploy = deploy_job("deploy-dev.yml")
    assert deploy["needs"] == "image"
    assert deploy["with"]["image"] == "${{ needs.image.outputs.image }}"
    assert image["outputs"]["image"] == "${{ steps.wait.outputs.image }}"
    (step,) = image["steps"]
    assert step["env"]["IMAGE"] == (
        "${{ inputs.image || format('{0}:{1}', vars.IMAGE_REPOSITORY, github.sha) }}"
    )
    assert image["timeout-minutes"] > 30, "the job outlives the default wait"


def fake_docker(tmp_path: Path, failures: int) -> Path:
    """A `docker` whose `buildx imagetools inspect` answers "not found" ``failures`` times,
    then finds the image; it records each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path}/calls
[[ "$1 $2 $3" == "buildx imagetools inspect" ]] || exit 2
if (( $(wc -l < {tmp_path}/calls) <= {failures} )); then
    echo "ERROR: $4: not found" >&2
    exit 1
fi
echo "Name: $4"
"""
    )
    docker.chmod(0o755)
    return bin_dir


def wait_step() -> dict[str, Any]:
    (step,) = load("deploy-dev.yml")["jobs"]["image"]["steps"]
    return step


def test_dev_waits_until_the_registry_has_the_image(tmp_path: Path) -> None:
    image = "ghcr.io/example/app:0123abc"
    bin_dir = fake_docker(tmp_path, failures=2)
    output = tmp_path / "github_output"
    env = {
        "IMAGE": image,
        "WAIT_MINUTES": "1",
        "INTERVAL_SECONDS": "0",
        "GITHUB_OUTPUT": str(output),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    result = run_step(wait_step(), env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"buildx imagetools inspect {image}"
    ] * 3
    assert result.stdout.count(f"waiting for {image}: ERROR: {image}: not found") == 2
    assert output.read_text() == f"image={image}\n"


def test_dev_wait_is_bounded_and_says_why(tmp_path: Path) -> None:
    image = "ghcr.io/example/app:0123abc"
    bin_dir = fake_docker(tmp_path, failures=10**6)
    output = tmp_path / "github_output"
    env = {
        "IMAGE": image,
        "WAIT_MINUTES": "0",
        "INTERVAL_SECONDS": "0",
        "GITHUB_OUTPUT": str(output),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    result = run_step(wait_step(), env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"::error title=Image not found::{image} is not in the registry after 0 min" in (
        result.stdout
    )
    assert f"Last answer: ERROR: {image}: not found" in result.stdout
    assert not output.exists(), "no image for the deploy job"
