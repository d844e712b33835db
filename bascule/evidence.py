"""Promotion evidence: what a source environment's worker signs for each release it verified,
and what an environment with ``promote_from:`` makes of it. Pure.

The history ConfigMap says which digests a source environment verified, and anyone who may
update ConfigMaps in its namespace can write it. So the source's worker signs each release
that succeeded there (``ssh-keygen -Y sign``, namespace ``bascule-evidence``) with a key only
that worker holds, named by its local setting ``BASCULE_EVIDENCE_KEY``. The message names the
environment, app, release, image repository, digest, commit and time, and the signature is
kept with the release's record. The target verifies it against ``promotion.evidence_signers``
in its reviewed config, where the key is listed for the source environment's name: a record
edited, added, or given another record's signature no longer verifies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

from bascule import history as h
from bascule.images import ImageError, parse_image
from bascule.signoff import Signer, Unverified

NAMESPACE = "bascule-evidence"  # ssh-keygen -n: an approval's signature is no use here
# The worker's local setting: the path of the private key its runs sign evidence with.
KEY_VARIABLE = "BASCULE_EVIDENCE_KEY"


@dataclass(frozen=True)
class Evidence:
    """That ``environment`` verified a release: what its worker signs."""

    # As bascule.sshsig.Subject: its namespace, and what its refusals say.
    namespace: ClassVar[str] = NAMESPACE
    kind: ClassVar[str] = "promotion evidence"
    mismatch: ClassVar[str] = (
        "the signature is not over this record (its environment, app, release, repository, "
        "digest, commit and time): it was changed, or the signature belongs to another record"
    )

    environment: str
    app: str
    release: str
    repository: str  # registry and repository of the image reference, no tag or digest
    digest: str
    commit: str | None
    at: str  # when the release finished: ISO-8601 UTC

    def message(self) -> str:
        """The exact text signed: the namespace, then the fields as canonical JSON (one
        line; no value can pass for another field, whatever a commit string holds)."""
        fields = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return f"{NAMESPACE} {fields}"


def repository(image: str) -> str:
    """The registry and repository of an image reference."""
    return parse_image(image, pinned=False).name


def of(release: h.Release, environment: str, app: str) -> Evidence | None:
    """The evidence ``release`` of ``app`` in ``environment`` stands for; None while it has
    not succeeded, or records no digest (nothing to promote by)."""
    if release.result != "succeeded" or release.digest is None or release.finished is None:
        return None
    return Evidence(
        environment=environment,
        app=app,
        release=release.id,
        repository=repository(release.image),
        digest=release.digest,
        commit=release.commit,
        at=release.finished,
    )


def runner_problem(environment: str, runner: str | None) -> str | None:
    """Why an environment whose worker signs evidence may not run its migrations this way:
    the process runner runs the upgrade, the app's Alembic env.py and revisions, in the
    flow's process, which can read the key. None: Job runner, or no migrations. (The plan
    still imports the revisions in that process with either runner: the worker holding the
    key runs only reviewed commits, see bascule/cli/worker.py.)"""
    if runner != "process":
        return None
    return (
        f"{environment}'s worker signs promotion evidence ({KEY_VARIABLE} is set), and "
        "migrations.runner: process runs the app's Alembic env.py in the process that can read "
        "that key — set `migrations.runner: job` in its file (the migrations then run in a "
        f"Kubernetes Job from the new image), or unset {KEY_VARIABLE} on this worker"
    )


def problem(
    candidate: h.Release,
    image: str,
    source: str,
    app: str,
    verify: Callable[[Evidence, str], Signer | Unverified],
) -> str | None:
    """Why ``candidate``, a succeeded release of ``source`` that ran the digest ``image``
    names, is no evidence for ``image``; None: its signature verifies. ``verify`` checks a
    signature of that evidence against the reviewed keys (``bascule.sshsig.verify``)."""
    want = repository(image)
    try:
        got = repository(candidate.image)
    except ImageError:  # a record written by hand: nothing of it is evidence
        return "records no valid image reference"
    if want != got:  # a digest verified under one repository vouches for that one only
        return f"ran repository {got}, not {want}"
    evidence = of(candidate, source, app)
    if candidate.evidence is None or evidence is None:
        return "carries no evidence signature (made without the worker's key, or written by hand)"
    verdict = verify(evidence, candidate.evidence)
    return verdict.reason if isinstance(verdict, Unverified) else None
