"""Throwaway SSH keys for signed approvals: ed25519 keys made by ssh-keygen in a test's
directory, an allowed_signers file that lists some of them, and git commits by their holders."""

from __future__ import annotations

import subprocess
from pathlib import Path

# An approver whose private key was thrown away when this was written: listing it makes a
# protected environment's configuration load, and nobody can sign with it.
NOBODY = (
    'nobody@example.com namespaces="bascule-approval" ssh-ed25519 '
    "AAAAC3NzaC1lZDI1NTE5AAAAIB1uBFA4KJwWTDmft2W7rRTXxVa/OGXxW0547xfwJUxs"
)

# The same thrown-away key, as staging's worker's evidence key (promotion.evidence_signers).
NOBODY_STAGING = (
    'staging namespaces="bascule-evidence" ssh-ed25519 '
    "AAAAC3NzaC1lZDI1NTE5AAAAIB1uBFA4KJwWTDmft2W7rRTXxVa/OGXxW0547xfwJUxs"
)


def keypair(directory: Path, name: str) -> Path:
    """A new ed25519 key without a passphrase: its private key file (``.pub`` beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        timeout=30,
    )
    return key


def allowed_signers(path: Path, signers: dict[str, Path]) -> Path:
    """Writes an allowed_signers file: principal → private key (its .pub is listed)."""
    lines = [
        f'{principal} namespaces="bascule-approval" {key.with_suffix(".pub").read_text().strip()}'
        for principal, key in signers.items()
    ]
    path.write_text("# approvers of this test\n" + "\n".join(lines) + "\n")
    return path


def listing_nobody(directory: Path) -> str:
    """Writes ``directory/allowed_signers`` listing NOBODY; returns the YAML that points a
    file in ``directory`` at it (what a protected environment needs to load)."""
    (directory / "allowed_signers").write_text(NOBODY + "\n")
    return "approval:\n  allowed_signers: allowed_signers\n"


def evidence_from_nobody(directory: Path) -> str:
    """Writes ``directory/evidence_signers`` listing NOBODY_STAGING; returns the YAML that
    points a file in ``directory`` at it (what a protected environment with promote_from:
    staging needs to load)."""
    (directory / "evidence_signers").write_text(NOBODY_STAGING + "\n")
    return "promotion:\n  evidence_signers: evidence_signers\n"


def fingerprint(key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key.with_suffix(".pub"))],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()[1]


def commit(repository: Path, email: str, name: str, key: Path | None = None) -> str:
    """A commit of everything in ``repository`` (made a git repository if it is not one),
    authored by ``email``/``name`` and, with ``key``, SSH-signed by it: its SHA."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repository), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()

    if not (repository / ".git").exists():
        git("init", "-q")
    git("add", "-A")
    who = ["-c", f"user.email={email}", "-c", f"user.name={name}"]
    signed = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key else []
    git(*who, *signed, "commit", "-q", "--allow-empty", "-m", "change", *(["-S"] if key else []))
    return git("rev-parse", "HEAD")
