"""Promotion by digest: what an environment with ``promote_from:`` accepts, and what
``bascule promote`` deploys. Pure: decided from the source environment's history.

A digest is verified in an environment when a release there succeeded (its checks and its
verification window passed) with its pods running that digest, and was not rolled back
by hand afterwards. Only a digest names one image for good: a tag can be moved to other
content after it was verified, so an image given by tag is refused rather than trusted.
Where the target lists evidence signers, that release must also carry the source worker's
signature of it, for the same repository (``bascule.evidence``): the history alone is a
ConfigMap anyone with write access to the source's namespace can edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bascule import evidence as ev
from bascule import history as h
from bascule.errors import Refused
from bascule.images import parse_image, pinned_to
from bascule.monitoring import failures

# The flow run label that carries the digest a release ran (the UI shows it; the trigger's
# job summary reads it).
DIGEST_LABEL = "bascule.digest"
SHOWN_REASONS = 3  # records a refusal names, newest first


def _promote_hint(source: str, target: str) -> str:
    return f"`bascule promote {source} {target}` deploys the digest {source} serves"


def _verifying(history: list[h.Release], digest: str) -> Iterator[h.Release]:
    """The releases of ``history`` that succeeded running ``digest`` and were not then
    taken back by hand (`bascule rollback` while it served: someone found it bad), newest
    first."""
    taken_back = {f.release.id for f in failures(history) if f.manual}
    for r in reversed(history):
        if r.result == "succeeded" and r.digest == digest and r.id not in taken_back:
            yield r


def verified(history: list[h.Release], digest: str) -> h.Release | None:
    """The newest release of ``history`` that verified ``digest``."""
    return next(_verifying(history, digest), None)


def check(
    image: str,
    source: str,
    target: str,
    history: list[h.Release],
    signed: Callable[[h.Release], str | None] | None = None,
) -> h.Release:
    """The release of ``source`` (its ``history``) that verified ``image``'s digest, for a
    deploy to ``target``; Refused, saying what to do, when there is none. With ``signed``
    (``target`` lists evidence signers): only a release it finds no problem with counts
    (``bascule.evidence.problem``, bound to the app and its reviewed keys)."""
    digest = parse_image(image, pinned=False).digest
    if digest is None:
        raise Refused(
            f"{target} takes only images {source} verified, and {image} names no digest, so "
            f"it cannot be checked — deploy it by digest (image@sha256:…) or: "
            f"{_promote_hint(source, target)}"
        )
    release = verified(history, digest)
    if release is None:
        raise Refused(
            f"{digest} is not recorded as verified in {source}: no release there succeeded "
            f"running it without being rolled back by hand (see `bascule history {source}`) — "
            f"deploy it to {source} first, or: "
            f"{_promote_hint(source, target)}"
        )
    if signed is None:
        return release
    reasons = []
    for candidate in _verifying(history, digest):
        reason = signed(candidate)
        if reason is None:
            return candidate
        reasons.append(f"release {candidate.id} ({candidate.image}) {reason}")
    if len(reasons) > SHOWN_REASONS:  # a history written by hand can hold any number
        reasons[SHOWN_REASONS:] = [f"and {len(reasons) - SHOWN_REASONS} more"]
    raise Refused(
        f"promotion evidence: {target} takes a digest only with {source}'s worker's signature "
        f"of the release that verified it, by a key its promotion.evidence_signers lists for "
        f"{source}, and none of {source}'s records of {digest} has one: {'; '.join(reasons)} — "
        f"deploy it to {source} again on its worker, which signs with {ev.KEY_VARIABLE} "
        f"(`bascule deploy {source} --image IMAGE --redeploy` if it serves there already), or: "
        f"{_promote_hint(source, target)}"
    )


def serving_image(
    history: list[h.Release], active: str | None, source: str
) -> tuple[str, h.Release]:
    """The image to promote from ``source``: the release its active color serves, pinned to
    the digest that release ran, and that release. Refused when nothing verified serves
    there."""
    release = h.serving(history, active)
    if release is None:
        raise Refused(
            f"nothing verified serves in {source} (no succeeded release of its active color; "
            f"see `bascule status {source}` and `bascule history {source}`) — deploy there first"
        )
    if release.digest is None:
        raise Refused(
            f"release {release.id} serving in {source} ({release.image}) has no recorded "
            f"digest (it ran before digests were recorded, or its runtime reported none) — "
            f"deploy it to {source} again: `bascule deploy {source} --image {release.image} "
            "--redeploy`"
        )
    return pinned_to(release.image, release.digest), release
