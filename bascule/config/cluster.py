"""The `kube:` section: how to reach the cluster (the adapter that reaches it is bascule.kube)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from bascule.config.base import Section


class KubeConfig(Section):
    """How to reach the cluster, with kubectl's conventions."""

    kubeconfig: Path | None = Field(
        default=None,
        description=(
            "Path to a kubeconfig file; relative to this file, `~` expanded. Default: like "
            "kubectl, $KUBECONFIG if set, else ~/.kube/config."
        ),
    )
    context: str | None = Field(
        default=None,
        min_length=1,
        description="kubeconfig context to use. Default: the kubeconfig's current-context.",
    )
    outage_tolerance_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description=(
            "How long the Kubernetes API may not answer (a control-plane upgrade, a leader "
            "change) before a deploy fails: meanwhile waits, checks and reads retry with "
            "backoff, and checks that cannot reach the API do not count as failed. 0: fail at "
            "the first unanswered request."
        ),
    )
