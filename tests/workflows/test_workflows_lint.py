"""Checks on the GitHub workflows: actionlint and zizmor with zero findings, and the rules the
deploy workflows promise (pinned actions, least privilege, no expressions inside scripts, one
concurrency group per environment)."""

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
        doc = load(name)
        (job,) = doc["jobs"].values()
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
    (job,) = load("deploy-production.yml")["jobs"].values()
    assert job["with"]["require-digest"] is True


def test_reusable_workflow() -> None:
    doc = load("_deploy.yml")
    assert set(doc["on"]) == {"workflow_call"}
    (job,) = doc["jobs"].values()
    assert job["environment"]["name"] == "${{ inputs.environment }}"
    assert job["concurrency"] == {
        "group": "bascule-deploy-${{ inputs.environment }}",
        "cancel-in-progress": False,
    }
    assert "timeout-minutes" in job
    steps = job["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert any(s.get("uses", "").startswith("actions/setup-python@") for s in steps)
    runs = [s["run"] for s in steps if "run" in s]
    assert any(re.search(r"pip install [\w= -]*\.$", run.strip()) for run in runs)
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
        assert job["permissions"] == {"contents": "read"}


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
