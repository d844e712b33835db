"""Image references: the one parser that config, CLI, trigger and flow all use. Pure.

The grammar is the OCI distribution spec's ``[domain/]path[:tag][@digest]``, checked part by
part with ``fullmatch`` so that the error names the part that is wrong, and so that nothing
(a trailing newline, a shell metacharacter) can follow a valid prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bascule.errors import UsageError

_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]{{1,5}})?", re.ASCII
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
# The digests registries use; the hex must be lowercase (OCI image spec).
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}", re.ASCII)
MAX_NAME_LENGTH = 255
MOVING_TAG = "latest"


class ImageError(UsageError):
    """An image reference that cannot be deployed; the message says which part and why."""


@dataclass(frozen=True)
class ImageRef:
    domain: str | None
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """Registry and repository, e.g. ``registry.example/team/app``."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_image(ref: str, *, pinned: bool = True, require_digest: bool = False) -> ImageRef:
    """Checks an image reference such as ``registry.example/team/app:1.2@sha256:<hex>``.

    ``pinned`` (release images) asks for a version tag or a digest: a release must name
    exactly one image, or rolling back to it means nothing. ``require_digest`` asks for an
    immutable reference: production deploys exactly the image that passed staging.
    Raises ImageError naming the part that is wrong and what to write instead.
    """
    if not ref:
        raise ImageError("the image reference is empty — write e.g. registry.example/app:v1.2")
    if any(ch.isspace() or not ch.isprintable() for ch in ref):
        raise ImageError(
            f"image reference {ref!r} contains whitespace or control characters — remove them"
        )
    name, at, digest = ref.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ImageError(
            f"image reference {ref!r}: digest {digest!r} is not valid — "
            "expected sha256: followed by 64 lowercase hex digits"
        )
    if require_digest and not at:
        raise ImageError(
            f"image reference {ref!r} has no digest; this environment deploys by digest only — "
            "give the reference that passed staging, as image@sha256:<64 hex digits>"
        )
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ImageError(
                f"image reference {ref!r}: tag {tag!r} is not valid — a tag is up to 128 "
                "letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )
    if len(name) > MAX_NAME_LENGTH:
        raise ImageError(
            f"image reference {ref!r}: the name is over {MAX_NAME_LENGTH} characters — shorten it"
        )
    domain: str | None = None
    first, sep, rest = name.partition("/")
    # As Docker decides: the first part names a registry when it looks like a host.
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, name = first, rest
        if not _DOMAIN.fullmatch(domain):
            raise ImageError(f"image reference {ref!r}: registry {domain!r} is not a valid host")
    if not _PATH.fullmatch(name):
        hint = " (repository names are lowercase)" if name != name.lower() else ""
        raise ImageError(
            f"image reference {ref!r}: repository {name!r} is not valid{hint} — "
            "expected lowercase words separated by '/', '.', '_' or '-'"
        )
    image = ImageRef(domain=domain, path=name, tag=tag, digest=digest or None)
    if pinned and image.digest is None:
        if image.tag is None:
            raise ImageError(
                f"image {ref!r} has no tag or digest — pin one (e.g. {ref}:v1 or @sha256:…) "
                "so that a release, and a rollback to it, means exactly one image"
            )
        if image.tag == MOVING_TAG:
            raise ImageError(
                f"image {ref!r} uses the moving tag '{MOVING_TAG}' — pin a version tag or a digest"
            )
    return image


def pods_digest(pods: list[dict[str, Any]], container: str | None = None) -> str | None:
    """The one manifest digest the app's container of ``pods`` runs (``container``, by default
    the first); None when a started one reports no repository digest, or they do not all run
    the same. A pod whose container has not started yet (no imageID) says nothing."""
    digests = set()
    for pod in pods:
        name = container or pod["spec"]["containers"][0]["name"]
        statuses = pod.get("status", {}).get("containerStatuses", [])
        if found := next((s.get("imageID") for s in statuses if s.get("name") == name), None):
            digests.add(running_digest(found))
    return digests.pop() if len(digests) == 1 else None


def running_digest(image_id: str) -> str | None:
    """The manifest digest in a container's ``status.containerStatuses[].imageID``.

    Runtimes give the repository digest the image was pulled by (``registry/app@sha256:…``,
    dockershim with a ``docker-pullable://`` prefix). A bare ``sha256:…`` is the runtime's
    local image id (the config's digest), which no registry serves: None, as for an empty id
    (a container not started yet) or anything that is not a reference.
    """
    ref = image_id.rpartition("://")[2]
    if "@" not in ref:
        return None
    try:
        # pinned=False only says what is meant: a reference with '@' either has a digest or
        # raises, so the pinning rule never applies here (mutants of it are equivalent).
        return parse_image(ref, pinned=False).digest  # pragma: no mutate
    except ImageError:
        return None


def pinned_to(image: str, digest: str) -> str:
    """``image`` pinned to ``digest``: its repository and tag (kept for people and for
    ``{image_tag}``; a runtime given both pulls by the digest) with ``@digest``."""
    ref = parse_image(image, pinned=False)
    return str(ImageRef(ref.domain, ref.path, ref.tag, digest))
