"""Who made a commit, as the checkout of the reviewed config tells it: its author and the
SSH key of its good signature, read with git (``gpg.format ssh``). The four-eyes rule that
uses them is ``bascule.signoff.four_eyes_problem``; here only git runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bascule.signoff import Commit, UnknownCommit

TIMEOUT_S = 30
# %GK is the key of a good signature, trusted (%G? G) or not (U): git gets an empty
# allowed-signers file here, since who signed matters, not whether anyone trusts them (without
# one, git would call a signed commit unsigned). %G? B: a bad signature.
_FORMAT = "%H%x00%ae%x00%an%x00%G?%x00%GK"
_FIELDS = 5


def read_commit(sha: str | None, repository: Path) -> Commit | UnknownCommit:
    """The author and signing key of commit ``sha`` in the git checkout that holds
    ``repository``; why not, when the run gave no commit or the checkout lacks it."""
    if not sha:
        return UnknownCommit(
            "the run was given no commit (the deploy's `commit` parameter: "
            "`bascule trigger --commit SHA`)"
        )
    where = f"the checkout of {repository}"
    try:
        done = subprocess.run(
            [
                "git", "-C", str(repository),
                "-c", "gpg.format=ssh", "-c", "gpg.ssh.allowedSignersFile=/dev/null",
                "log", "-1", "--no-walk", f"--format={_FORMAT}", "--end-of-options", sha, "--",
            ],
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UnknownCommit(f"git could not read commit {sha} in {where}: {exc}")
    fields = done.stdout.strip("\n").split("\x00")
    if done.returncode != 0 or len(fields) != _FIELDS:
        why = (done.stderr.strip().splitlines() or ["no output"])[0]
        return UnknownCommit(f"commit {sha} is not in {where} (git: {why})")
    full, email, name, verdict, key = fields
    # A name git resolved (a branch, HEAD~1) is not the commit the image was built from.
    if len(sha) < 7 or not full.startswith(sha.lower()):
        return UnknownCommit(f"{sha!r} is not a commit SHA (expected hex, 7 to 64 digits)")
    if verdict == "B":
        return UnknownCommit(f"the signature of commit {sha} is bad")
    return Commit(full, email, name, key or None)
