"""ssh-keygen's ``-Y`` signatures over a subject's one-line message, in the subject's own
namespace: an approval (``bascule approve --key`` signs, the deploy flow verifies) and a
source environment's promotion evidence (its worker signs, the target's deploy verifies),
each against an allowed_signers file. The decisions around them are in ``bascule.signoff``
and ``bascule.evidence``; here only the processes run."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar, Protocol

from bascule.errors import UsageError
from bascule.signoff import ARMOR_BEGIN, Signer, Unverified, armor

_GOOD = re.compile(r"^Good \"[^\"]*\" signature for (?P<principal>.+) with \S+ key (?P<fp>\S+)$")
TIMEOUT_S = 30


class Subject(Protocol):
    """What is signed: its exact text, and the ssh-keygen namespace (``-n``) it is signed in,
    so that a signature made for one kind of subject is no use for another."""

    namespace: ClassVar[str]
    kind: ClassVar[str]  # "approvals": what the environment takes only signed
    # Why a good signature of something else does not count, and what to sign instead.
    mismatch: ClassVar[str]

    def message(self) -> str: ...


def _keygen(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError(
            "ssh-keygen is not installed; install OpenSSH's client (Debian: openssh-client)"
        ) from None


def sign(subject: Subject, key: Path, given_by: str = "--key") -> str:
    """The armored signature of ``subject`` by ``key`` (a private key, or the public half of
    a key an ssh-agent holds); ``given_by`` says where the key's path came from."""
    if not key.expanduser().is_file():
        raise UsageError(f"{key}: no such key file — give your SSH private key with {given_by}")
    path = str(key.expanduser())
    done = _keygen("-Y", "sign", "-f", path, "-n", subject.namespace, stdin=subject.message())
    if done.returncode != 0 or ARMOR_BEGIN not in done.stdout:
        why = done.stderr.strip().splitlines()[-1:] or ["no signature"]
        raise UsageError(f"ssh-keygen could not sign with {key}: {why[0]}")
    return done.stdout


def verify(
    subject: Subject, pasted: str, allowed_signers: Path, principal: str | None = None
) -> Signer | Unverified:
    """Who signed ``subject``, if the signature is good and its key is in ``allowed_signers``
    (listed for ``principal``, when given)."""
    try:
        signature = armor(pasted)
    except ValueError as exc:
        return Unverified(str(exc))
    if signature is None:
        return Unverified(f"no signature: this environment takes only signed {subject.kind}")
    with tempfile.TemporaryDirectory(prefix="bascule-sig-") as tmp:
        sig = Path(tmp) / "approval.sig"
        sig.write_text(signature)
        found = _keygen("-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers))
        # One line per matching entry; an entry may list several principals.
        principals = [p for p in re.split(r"[\s,]+", found.stdout) if p]
        if found.returncode != 0 or not principals:
            return Unverified(
                f"the signing key is not in {allowed_signers.name} (or the signature is damaged)"
            )
        if principal is not None:
            if principal not in principals:
                return Unverified(
                    f"the signing key is listed in {allowed_signers.name} for "
                    f"{', '.join(principals)}, not for {principal}"
                )
            principals = [principal]
        for listed in principals:
            done = _keygen(
                "-Y", "verify", "-f", str(allowed_signers), "-I", listed,
                "-n", subject.namespace, "-s", str(sig), stdin=subject.message(),
            )  # fmt: skip
            good = _GOOD.match(done.stdout.strip())
            if done.returncode == 0 and good and good["principal"] == listed:
                return Signer(listed, good["fp"])
    return Unverified(f"{subject.mismatch} with the namespace {subject.namespace}")
