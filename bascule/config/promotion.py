"""`promotion:`: how an environment trusts what its `promote_from:` environment verified."""

from __future__ import annotations

from pydantic import Field, field_validator

from bascule.config.base import Section, SignersFile, check_signers_file
from bascule.evidence import NAMESPACE as EVIDENCE_NAMESPACE


class PromotionConfig(Section):
    """How this environment trusts what its `promote_from:` environment verified."""

    evidence_signers: SignersFile | None = Field(
        default=None,
        description=(
            "An allowed_signers file (relative to this file) listing the public key of the "
            "promote_from environment's worker, with that environment's name as principal "
            '(`staging namespaces="bascule-evidence" ssh-ed25519 AAAA…`). A digest is then '
            "accepted only from a release whose record carries that worker's signature "
            f"(namespace {EVIDENCE_NAMESPACE}) of its environment, app, release, image "
            "repository, digest, commit and time, and only for that repository: a record "
            "written into the history ConfigMap by anyone else does not count. A protected "
            "environment with promote_from must have one listing at least one key. Unset: "
            "the source's history is trusted as written."
        ),
    )

    _signers = field_validator("evidence_signers")(check_signers_file)
