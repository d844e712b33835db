"""One Kubernetes object as the app's manifests render it, with where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RenderedObject:
    data: Mapping[str, Any]  # one Kubernetes object
    origin: str  # for messages, e.g. "manifests/hpa.yaml:12"
