"""`manifests:`: the app's Kubernetes objects, as a directory of plain YAML, a Kustomize directory
or a Helm chart with values. Written as a path, or as a mapping with the kind and values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, ValidationInfo, model_validator

from bascule.config.base import FieldProblem, Section, found
from bascule.source_rules import (
    CHART_FILE,
    KUSTOMIZATION_FILES,
    SourceKind,
    detect_kind,
    kind_mismatch,
)

# Helm's rule for a release name: a DNS-1123 subdomain of at most 53 characters.
_RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,51}[a-z0-9])?$")


class ManifestsConfig(Section):
    """Where the app's manifests are and how they are rendered."""

    SHORTHAND: ClassVar[str | None] = "path"

    path: Path = Field(
        default=Path("manifests"),  # the loader takes it, too, relative to the file
        description=(
            "Directory of the app's Kubernetes manifests, relative to this file; "
            "`manifests: DIR` is short for `manifests: {path: DIR}`."
        ),
    )
    kind: SourceKind | None = Field(
        default=None,
        description=(
            "How the directory is rendered: `plain` (every *.yaml and *.yml file in it, in "
            "name order, several documents a file allowed), `kustomize` (kubectl kustomize, "
            "plugins, Helm and remote bases off; every file it reads must be in the app's "
            "repository) or `helm` (helm template with `values:`, its test hooks left out; "
            "dependencies must be vendored under charts/). The kubectl and helm are the "
            "renderer's own: $BASCULE_KUBECTL and $BASCULE_HELM, else on PATH. Default: "
            f"detected — {KUSTOMIZATION_FILES[0]} (or .yml, Kustomization) means kustomize, "
            f"{CHART_FILE} helm, else plain."
        ),
    )
    values: tuple[Path, ...] = Field(
        default=(),
        description=(
            "Helm only: values files, relative to this file, in order (a later one wins), "
            "as `helm template --values`."
        ),
    )
    release: str | None = Field(
        default=None,
        description="Helm only: the release name the chart sees. Default: the app's name.",
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        seen = found(info, self.path)
        if seen is not None and seen.kind == "file":
            raise FieldProblem(
                f"{seen.shown} is a file — name the directory that holds the manifests",
                "path",
            )
        if self.release is not None and not _RELEASE.fullmatch(self.release):
            raise FieldProblem(
                f"{self.release!r} is not a Helm release name — use at most 53 lowercase "
                "letters, digits, '-' and '.', beginning and ending with a letter or digit",
                "release",
            )
        if (
            seen is not None
            and seen.kind == "dir"
            and self.kind is not None
            and (why := kind_mismatch(self.kind, seen.entries)) is not None
        ):
            raise FieldProblem(
                f"{seen.shown} {why} — fix `kind:` or leave it out to detect it", "kind"
            )
        # Known not to be a chart: so written, or so detected in a directory that exists.
        detected = detect_kind(seen.entries) if seen is not None and seen.kind == "dir" else None
        not_helm = (self.kind or detected or "helm") != "helm"
        if not_helm and (self.values or self.release is not None):
            key = "values" if self.values else "release"
            raise FieldProblem(
                f"only a Helm chart takes `{key}:` and {self.path.name} is not one (it has no "
                f"{CHART_FILE}) — remove `{key}:` or point `path:` at the chart",
                key,
            )
        for i, value in enumerate(self.values):
            if (file := found(info, value)) is not None and file.kind != "file":
                raise FieldProblem(
                    f"{file.shown} does not exist — fix the path (relative to this file)",
                    "values",
                    i,
                )
        return self
