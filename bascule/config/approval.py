"""`approval:`, the manual gate before the switch, and `preview:`, the link the people who
decide open."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import Field, StrictBool, field_validator, model_validator

from bascule import analysis
from bascule.config.base import (
    FieldProblem,
    Section,
    SignersFile,
    check_http_url,
    check_signers_file,
)


class ApprovalConfig(Section):
    """The manual gate between the pre-switch checks and the traffic switch."""

    required: StrictBool = Field(
        default=False,
        description=(
            "Pause before switching traffic until a person approves. Default: true for a "
            "protected environment (which cannot turn it off), false elsewhere."
        ),
    )
    timeout_seconds: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description="How long to wait for a decision; no answer in time means no switch.",
    )
    allowed_signers: SignersFile | None = Field(
        default=None,
        description=(
            "An allowed_signers file (ssh-keygen's format, as git uses it; relative to this "
            "file): an approval counts only when signed (`bascule approve RUN --key KEY`, or "
            "the command the approval form shows) by a key listed there, and the history "
            "records that key's principal. Keep it in the repository so that changing who may "
            "approve takes a reviewed commit. A protected environment must have one listing "
            "at least one key. Unset: the typed name is recorded, unverified."
        ),
    )

    min_signers: int = Field(
        default=1,
        ge=1,
        le=20,
        description=(
            "How many approvals, each signed by a different key of allowed_signers (and a "
            "different principal), a switch needs. The run stays paused, its form saying who "
            "signed so far, until that many, a rejection or the timeout."
        ),
    )
    four_eyes: StrictBool = Field(
        default=False,
        description=(
            "Refuse an approval signed by the author of the commit the image was built from "
            "(the principal is their email or name) or by the key that signed that commit, "
            "read with git from this config's checkout. Fail safe: a run without a `commit`, "
            "or whose commit that checkout lacks, cannot be approved."
        ),
    )

    @model_validator(mode="after")
    def _signed_when_counted(self) -> Self:
        # Typed names are claims: counting them or comparing them with an author proves nothing.
        for name, asks in (("min_signers", self.min_signers > 1), ("four_eyes", self.four_eyes)):
            if asks and self.allowed_signers is None:
                raise FieldProblem(
                    f"{name} compares the keys that sign approvals — set allowed_signers to "
                    "the reviewed file of approvers' keys",
                    name,
                )
        return self

    _signers = field_validator("allowed_signers")(check_signers_file)


# What a preview link names: the release waiting for approval, on the color it runs on.
PREVIEW_PLACEHOLDERS = ("app", "environment", "namespace", "color", "release")


class PreviewConfig(Section):
    """The preview link people open before the switch: the form, `bascule pending`, the
    approval request's message and the report show it. Checks do not use it."""

    url: str | None = Field(
        default=None,
        description=(
            "URL template of the preview Service as a browser reaches it (e.g. behind an "
            "Ingress host), e.g. https://{app}-preview.staging.example. Placeholders: "
            + ", ".join(f"{{{k}}}" for k in PREVIEW_PLACEHOLDERS)
            + " (the new color and its release id). Default: none; the form then shows the "
            "Kubernetes API server's service proxy path, which needs cluster credentials."
        ),
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        unknown = sorted(analysis.placeholders_in(value) - set(PREVIEW_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} — use one of "
                + ", ".join(f"{{{k}}}" for k in PREVIEW_PLACEHOLDERS)
            )
        sample = analysis.render(value, {k: "x" for k in PREVIEW_PLACEHOLDERS})
        if "{" in sample or "}" in sample:
            raise ValueError("a brace that is no placeholder — write placeholders as {app}")
        check_http_url(sample)
        return value

    def link(self, values: Mapping[str, str]) -> str | None:
        """The URL for one release (``values``: analysis.placeholders), if one is configured."""
        return None if self.url is None else analysis.render(self.url, values)
