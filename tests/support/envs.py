"""Environment configurations for tests: the repository's own files with the namespace,
cluster and timings a test needs, written to a temporary directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

# The same deep merge as an app's file over its environment's.
from bascule.apps import overlay as merge
from bascule.config import PRODUCTION
from tests.support.signers import NOBODY, NOBODY_STAGING, allowed_signers, keypair

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
    # The repository's lists nobody, which a protected environment refuses: list an approver,
    # and a staging key for the evidence production's promote_from takes.
    for name, line in (("allowed_signers", NOBODY), ("evidence_signers", NOBODY_STAGING)):
        with (target / name).open("a") as signers:
            signers.write(line + "\n")
    shutil.copytree(REPO / "sampleapp" / "migrations", tmp / "sampleapp" / "migrations")
    shutil.copy(REPO / "sampleapp" / "alembic.ini", tmp / "sampleapp")
    return target


def write_envs(
    directory: Path,
    namespace: str,
    kubeconfig: Path | None,
    overrides: dict[str, Any] | None = None,
    environments: tuple[str, ...] = ("dev", "staging", "production"),
) -> Path:
    """Writes a file per environment (each in its own namespace, derived from ``namespace``)
    plus the manifests; returns the directory. An environment the repository does not ship
    (qa) is dev's file under its own name. A protected environment (production) whose approval
    names no allowed_signers gets ``directory/allowed_signers``, listing
    ``approver_key(directory)``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "deployments" / "manifests", directory / "manifests", dirs_exist_ok=True)
    for env in environments:
        shipped = REPO / "deployments" / f"{env}.yaml"
        if not shipped.exists():
            shipped = REPO / "deployments" / "dev.yaml"
        data = {**yaml.safe_load(shipped.read_text()), "environment": env}
        # Its path is relative to the repository and it needs a database: a test that
        # migrates passes a section of its own.
        data.pop("migrations", None)
        # Production takes only digests staging verified and signed: the promotion test sets
        # both again, with a staging key of its own.
        data.pop("promote_from", None)
        data.pop("promotion", None)
        # Relative too, and it lists nobody: replaced by the test approver's below, or a
        # test of signed approvals passes its own, and so its four-eyes rule (which compares
        # signing keys) with its own commit.
        data.get("approval", {}).pop("allowed_signers", None)
        data.get("approval", {}).pop("four_eyes", None)
        # The shipped latency limits are for a real cluster, not one sharing two loaded cores
        # with the suite (CI saw 785 ms against production's 500): tests of latency set theirs.
        for check in data.get("checks", {}).get("health", []):
            check.pop("max_latency_ms", None)
        data = merge(data, {"namespace": env_namespace(namespace, env)})
        if kubeconfig is not None:  # None: the runner's $KUBECONFIG (a worker's own)
            data = merge(data, {"kube": {"kubeconfig": str(kubeconfig)}})
        data = merge(data, FAST)
        data = merge(data, overrides or {})
        protected = env == PRODUCTION or data.get("protected") is True
        if protected and not data.get("approval", {}).get("allowed_signers"):
            key = approver_key(directory)
            if not key.exists():
                keypair(key.parent, key.name)
            allowed_signers(directory / "allowed_signers", {"approver@example.com": key})
            data = merge(data, {"approval": {"allowed_signers": "allowed_signers"}})
        (directory / f"{env}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


def env_namespace(namespace: str, environment: str) -> str:
    """The namespace ``write_envs`` gives ``environment`` from a test's ``namespace``."""
    return namespace if environment == "staging" else f"{namespace}-{environment}"


def approver_key(directory: Path) -> Path:
    """The SSH key that signs approvals of the protected environments ``write_envs`` wrote to
    ``directory`` (``bascule approve RUN --key`` it); kept outside that directory."""
    return directory.parent / f"{directory.name}-keys" / "approver"
