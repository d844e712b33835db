"""ssh-keygen's ``-Y`` signatures: signing an approval (``bascule approve --key``) and
verifying one (the deploy flow) against an allowed_signers file. The decisions around them
are in ``bascule.signoff``; here only the processes run."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from bascule.errors import UsageError
from bascule.signoff import ARMOR_BEGIN, NAMESPACE, Request, Signer, Unverified, armor

_GOOD = re.compile(r"^Good \"[^\"]*\" signature for (?P<principal>.+) with \S+ key (?P<fp>\S+)$")
TIMEOUT_S = 30


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


def sign(request: Request, key: Path) -> str:
    """The armored signature of ``request`` by ``key`` (a private key, or the public half of
    a key an ssh-agent holds)."""
    if not key.expanduser().is_file():
        raise UsageError(f"{key}: no such key file — give your SSH private key with --key")
    path = str(key.expanduser())
    done = _keygen("-Y", "sign", "-f", path, "-n", NAMESPACE, stdin=request.message())
    if done.returncode != 0 or ARMOR_BEGIN not in done.stdout:
        why = done.stderr.strip().splitlines()[-1:] or ["no signature"]
        raise UsageError(f"ssh-keygen could not sign with {key}: {why[0]}")
    return done.stdout


def verify(request: Request, pasted: str, allowed_signers: Path) -> Signer | Unverified:
    """Who signed ``request``, if the signature is good and its key is in ``allowed_signers``."""
    try:
        signature = armor(pasted)
    except ValueError as exc:
        return Unverified(str(exc))
    if signature is None:
        return Unverified("no signature: this environment takes only signed approvals")
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
        for principal in principals:
            done = _keygen(
                "-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE,
                "-s", str(sig), stdin=request.message(),
            )  # fmt: skip
            good = _GOOD.match(done.stdout.strip())
            if done.returncode == 0 and good and good["principal"] == principal:
                return Signer(principal, good["fp"])
    return Unverified(
        "the signature does not match this run: sign this run's message "
        "(run, environment, app, image, release) with the namespace " + NAMESPACE
    )
