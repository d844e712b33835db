"""examples/sample-app, the app's repository `make demo` deploys from: every environment
validates on its own Kustomize overlay (rendered by the cluster's kubectl), and the directory
is configuration only, none of Bascule's code; the demo's repository is made from it alone."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bascule.cli import main
from tests.support.envs import REPO

EXAMPLE = REPO / "examples" / "sample-app"
ENVIRONMENTS = ("dev", "staging", "production")
# What only Bascule's repository holds: its package and the flows and tasks it exposes.
BASCULES_CODE = frozenset({"bascule", "flows", "tasks"})
# The only Python an app's configuration holds: its Alembic migrations.
MIGRATIONS = Path("sampleapp") / "migrations"


def test_each_environment_validates_on_its_own_kustomize_overlay(
    rendering_tools: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--dir", str(EXAMPLE / "deployments")]) == 0
    # What each environment's sample-app manages, as its "ENV (sample-app) manages:" lists it.
    blocks = re.findall(
        r"^(\S+) \(sample-app\) manages:\n((?:  .*\n)+)", capsys.readouterr().out, re.M
    )
    managed = {env: lines for env, lines in blocks}
    assert sorted(managed) == sorted(ENVIRONMENTS), managed
    for env, lines in managed.items():
        overlay = f"manifests/overlays/{env}"
        assert f"{overlay}: Deployment sample-app): workload" in lines, lines
        assert f"{overlay}: Service sample-app): service" in lines, lines
        assert all(overlay in line for line in lines.splitlines()), lines
    assert "PodDisruptionBudget sample-app" in managed["production"]


def test_the_example_holds_configuration_only() -> None:
    # Links followed: the demo copies them as files (cp -L).
    found: list[Path] = []
    for top, dirs, files in os.walk(EXAMPLE, followlinks=True):
        here = Path(top).relative_to(EXAMPLE)
        found += [here / d for d in dirs if d in BASCULES_CODE]
        python = [here / f for f in files if f.endswith(".py")]
        found += [p for p in python if p.name == "__init__.py" or not p.is_relative_to(MIGRATIONS)]
    assert (EXAMPLE / MIGRATIONS / "versions").is_dir()
    assert found == []


def test_the_demo_makes_the_apps_repository_from_the_example_alone() -> None:
    script = (REPO / "scripts" / "demo.sh").read_text()
    body = re.search(r"^tree\(\) \{.*?^\}$", script, re.DOTALL | re.MULTILINE)
    assert body is not None, "scripts/demo.sh has no tree() function"
    copies = re.findall(r"^\s*cp (.*)$", body.group(0), re.MULTILINE)
    only_example = re.compile(r'(-\w+ )?examples/sample-app/\. "\$t/?"(\s+#.*)?')
    assert copies and all(only_example.fullmatch(c) for c in copies), copies
