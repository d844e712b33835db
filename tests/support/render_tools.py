"""The binaries that render `manifests:` in tests: the local cluster's kubectl (built by
tests/cluster/build.sh) and the helm scripts/build-helm.sh builds, each cached per machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bascule.manifest_sources import HELM_ENV, KUBECTL_ENV
from tests.support.cluster import CLUSTER_DIR, REPO

BUILD_HELM = REPO / "scripts" / "build-helm.sh"
# A cold build downloads and compiles Helm's modules; on 2 busy cores that took ~9 minutes.
BUILD_TIMEOUT_SECONDS = 1800


def _built(script: Path) -> str:
    """The last line a build script prints: what it built; its log in the error if it fails."""
    done = subprocess.run(
        [str(script)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


def kubectl() -> str:
    """$BASCULE_KUBECTL (an existing cluster's, as tests/support/cluster.existing takes it),
    else the local cluster's."""
    return os.environ.get(KUBECTL_ENV) or f"{_built(CLUSTER_DIR / 'build.sh')}/kubectl"


def helm() -> str:
    """$BASCULE_HELM if set, else the helm scripts/build-helm.sh builds (once per version)."""
    return os.environ.get(HELM_ENV) or _built(BUILD_HELM)
