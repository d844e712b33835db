"""What rendering an app's `manifests:` gives: the Kubernetes objects, each with where it came
from. Pure data: ``bascule.manifest_sources`` renders, later stages read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RenderedObject:
    """One Kubernetes object of the app's rendered manifests (never mutated)."""

    data: Mapping[str, Any]  # the object, as its YAML document said
    origin: str  # where it came from, for messages: "manifests/hpa.yaml:12"

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def name(self) -> str:
        metadata = self.data.get("metadata")
        return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
