"""`workload:`, which of the rendered objects are the app's workload: its Deployment, its
Service and the container that runs the deployed image."""

from __future__ import annotations

from pydantic import Field

from bascule.config.base import Section


class WorkloadConfig(Section):
    """Which rendered objects Bascule runs blue-green (needed only when there are several)."""

    deployment: str | None = Field(
        default=None,
        description=(
            "metadata.name of the Deployment that is the app's workload, rendered once per "
            "color. Default: the only Deployment of the manifests."
        ),
    )
    service: str | None = Field(
        default=None,
        description=(
            "metadata.name of the Service that reaches the workload, rendered as the active "
            "and the preview Service. Default: the only Service of the manifests."
        ),
    )
    container: str | None = Field(
        default=None,
        description=(
            "Name of the container that runs the deployed image and gets `env:` and "
            "`secrets:`; the others (sidecars) keep their images. Default: the first container."
        ),
    )
