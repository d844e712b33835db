"""Environment configurations for tests: the repository's own files with the namespace,
cluster and timings a test needs, written to a temporary directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

# The same deep merge as an app's file over its environment's.
from bascule.apps import overlay as merge

REPO = Path(__file__).resolve().parents[2]

# The shortest waits that still exercise every step.
FAST: dict[str, Any] = {
    "rollout": {
        "ready_timeout_seconds": 90,
        "progress_deadline_seconds": 60,
        "scale_down_delay_seconds": 4,
        "readiness_failure_limit": 4,
    },
    "verification": {"window_seconds": 4, "interval_seconds": 1},
}


def copy_deployments(tmp: Path) -> Path:
    """A writable copy of the repository's deployments directory, with the sample app's
    migrations beside it where the files' `migrations:` sections point."""
    target = tmp / "deployments"
    shutil.copytree(REPO / "deployments", target)
    shutil.copytree(REPO / "sampleapp" / "migrations", tmp / "sampleapp" / "migrations")
    shutil.copy(REPO / "sampleapp" / "alembic.ini", tmp / "sampleapp")
    return target


def write_envs(
    directory: Path,
    namespace: str,
    kubeconfig: Path,
    overrides: dict[str, Any] | None = None,
    environments: tuple[str, ...] = ("dev", "staging", "production"),
) -> Path:
    """Writes dev, staging and production files (each in its own namespace, derived from
    ``namespace``) plus the manifests; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "deployments" / "manifests", directory / "manifests", dirs_exist_ok=True)
    for env in environments:
        data = yaml.safe_load((REPO / "deployments" / f"{env}.yaml").read_text())
        # Its path is relative to the repository and it needs a database: a test that
        # migrates passes a section of its own.
        data.pop("migrations", None)
        # Production takes only digests staging verified: the promotion test sets it again.
        data.pop("promote_from", None)
        # Relative too, and it lists nobody: a test of signed approvals passes its own, and
        # so its four-eyes rule (which compares signing keys) with its own commit.
        data.get("approval", {}).pop("allowed_signers", None)
        data.get("approval", {}).pop("four_eyes", None)
        data = merge(
            data,
            {
                "namespace": f"{namespace}-{env}" if env != "staging" else namespace,
                "kube": {"kubeconfig": str(kubeconfig)},
            },
        )
        data = merge(data, FAST)
        data = merge(data, overrides or {})
        (directory / f"{env}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return directory
