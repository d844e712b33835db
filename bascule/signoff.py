"""Signed approvals: what an approver signs, and what the flow makes of a signature. Pure.

An approval of an environment with ``approval.allowed_signers`` counts only with an SSH
signature (``ssh-keygen -Y sign``, namespace ``bascule-approval``) over ``message(request)``
by a key that the allowed_signers file lists. The message names the flow run, environment,
app, image and release, so a signature approves that run and nothing else: it cannot be
replayed on another run, nor moved to another image. ``bascule.sshsig`` runs ssh-keygen.

Where ``approval.min_signers`` asks for more than one, each good signature counts once per
key and once per principal; with ``approval.four_eyes``, not by the commit's author nor by
the key that signed the commit (``bascule.gitcommit`` reads them).
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

NAMESPACE = "bascule-approval"  # ssh-keygen -n: a signature for git or anything else is no use
ARMOR_BEGIN, ARMOR_END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
ARMOR_WIDTH = 70  # ssh-keygen's own line length
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
DEFAULT_KEY = "~/.ssh/id_ed25519"
# The run input where a paused run keeps its Request, for `bascule approve --key`.
REQUEST_KEY = "bascule-approval-request"
# The preview link the approval form shows, as a run input: `bascule pending` lists it.
PREVIEW_KEY = "bascule-approval-preview"


@dataclass(frozen=True)
class Request:
    """What one paused run asks to be approved."""

    # As bascule.sshsig.Subject: its namespace, and what its refusals say.
    namespace: ClassVar[str] = NAMESPACE
    kind: ClassVar[str] = "approvals"
    mismatch: ClassVar[str] = (
        "the signature does not match this run: sign this run's message "
        "(run, environment, app, image, release)"
    )

    run: str  # the flow run id
    environment: str
    app: str
    image: str
    release: str

    def message(self) -> str:
        """The exact text to sign: one line, no trailing newline."""
        return (
            f"{NAMESPACE} approve=true run={self.run} environment={self.environment} "
            f"app={self.app} image={self.image} release={self.release}"
        )


def sign_command(request: Request, key: str = DEFAULT_KEY) -> str:
    """The shell command that prints the signature of ``request``, for people without the CLI."""
    return (
        f"printf '%s' {shlex.quote(request.message())} | ssh-keygen -Y sign -f {key} -n {NAMESPACE}"
    )


@dataclass(frozen=True)
class Signer:
    """Whom a good signature is from: the principal allowed_signers gives its key."""

    principal: str
    fingerprint: str  # SHA256:…


@dataclass(frozen=True)
class Commit:
    """Who made the commit the image was built from, as git tells it."""

    sha: str
    author_email: str
    author_name: str
    # The fingerprint (SHA256:…) of the SSH key whose signature on the commit is good,
    # whether or not anyone trusts that key; None: the commit carries no such signature.
    signing_key: str | None = None


@dataclass(frozen=True)
class UnknownCommit:
    """Why the commit's author and signer cannot be known."""

    reason: str


def four_eyes_problem(signer: Signer, commit: Commit | UnknownCommit) -> str | None:
    """Why ``signer`` may not approve a deploy of ``commit``: one person holding a key and
    a Prefect credential must not ship their own change alone. None: they may. Fail safe:
    a commit that cannot be read admits nobody."""
    if isinstance(commit, UnknownCommit):
        return (
            f"four eyes: {commit.reason}, so no approval can be told apart from its author's "
            "— reject this run and deploy with the commit the image was built from"
        )
    short = commit.sha[:12]
    if commit.signing_key is not None and signer.fingerprint == commit.signing_key:
        return (
            f"four eyes: the key {signer.fingerprint} signed commit {short} itself; "
            "another person's key must approve it"
        )
    author = {commit.author_email.casefold(), commit.author_name.casefold()}
    if signer.principal.casefold() in author:
        return (
            f"four eyes: {signer.principal} is the author of commit {short} "
            f"({commit.author_name} <{commit.author_email}>); another person's key must approve it"
        )
    return None


def repeat_problem(signer: Signer, counted: Sequence[Signer]) -> str | None:
    """Why ``signer`` adds nothing to the signatures ``counted`` already: each key counts
    once, and so does each principal (one person listed with two keys). None: it counts."""
    for earlier in counted:
        if earlier.fingerprint == signer.fingerprint:
            return (
                f"the key {signer.fingerprint} ({earlier.principal}) has signed this run "
                "already and counts once: another approver's key must sign"
            )
        if earlier.principal == signer.principal:
            return (
                f"{signer.principal} has signed this run already (with the key "
                f"{earlier.fingerprint}) and counts once: another approver must sign"
            )
    return None


@dataclass(frozen=True)
class Unverified:
    """Why an approval's signature does not count."""

    reason: str


def armor(text: str) -> str | None:
    """The signature as ssh-keygen reads it, from what was pasted: the armored text with or
    without its line breaks (a one-line form field drops them), or its base64 alone. None
    for a blank field; ValueError for anything else that is not a signature."""
    compact = "".join(text.split())
    if not compact:
        return None
    # Whitespace goes first, the markers' own spaces with it.
    begin, end = ("".join(marker.split()) for marker in (ARMOR_BEGIN, ARMOR_END))
    body = compact.removeprefix(begin).removesuffix(end)
    if not _BASE64.fullmatch(body):
        raise ValueError("not an SSH signature (expected the output of ssh-keygen -Y sign)")
    lines = textwrap.wrap(body, ARMOR_WIDTH)
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-|sk-)[-@.a-z0-9]+$")


def signers_line_problem(line: str) -> str | None:
    """What is wrong with one line of an allowed_signers file (``principals [options]
    key-type base64-key [comment]``); None for a good, blank or comment line."""
    words = _signers_words(line)
    return words if isinstance(words, str) else None


def signers_count(text: str) -> int:
    """How many keys the text of an allowed_signers file lists: its good lines."""
    return sum(isinstance(_signers_words(line), list) for line in text.splitlines())


def _signers_words(line: str) -> list[str] | str | None:
    """A line's words if it lists a key, what is wrong with it, or None: blank or comment."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:  # an unclosed quote in the options
        return f"{exc} — check the quotes of its options"
    if not words:
        return None
    at = next((i for i, w in enumerate(words) if _KEY_TYPE.fullmatch(w)), None)
    if at is None or at == 0 or at + 1 >= len(words) or not _BASE64.fullmatch(words[at + 1]):
        return (
            "not an allowed_signers line — write `principal ssh-ed25519 AAAA…` (the principal, "
            "then the public key as in the .pub file)"
        )
    return words
