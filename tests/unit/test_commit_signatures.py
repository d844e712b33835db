"""The worker's signed-commit check (bascule/checkout.py ``_signature_problem``) against real
git and ssh-keygen: a commit signed by a listed key passes; unsigned, signed by a key not
listed, or with no signers file in the commit, it is refused with git's reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from bascule.checkout import _signature_problem
from tests.support import signers


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return {name: signers.keypair(tmp_path / "keys", name) for name in ("ann", "eve")}


def signed_repo(tmp_path: Path, keys: dict[str, Path], key: str | None) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    listed = repo / "commit_signers"
    # Commit signatures use git's namespace, not the approvals'.
    listed.write_text(
        f'ann@example.com namespaces="git" {keys["ann"].with_suffix(".pub").read_text()}'
    )
    sha = signers.commit(repo, "ann@example.com", "Ann", keys[key] if key else None)
    return repo, sha


def test_a_commit_signed_by_a_listed_key_passes(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = signed_repo(tmp_path, keys, "ann")
    assert _signature_problem(sha, repo / "commit_signers", repo) is None


@pytest.mark.parametrize("key", [None, "eve"], ids=["unsigned", "unlisted-key"])
def test_other_commits_are_refused_with_gits_reason(
    tmp_path: Path, keys: dict[str, Path], key: str | None
) -> None:
    repo, sha = signed_repo(tmp_path, keys, key)
    problem = _signature_problem(sha, repo / "commit_signers", repo)
    assert problem, problem


def test_no_signers_file_in_the_commit_is_a_refusal(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = signed_repo(tmp_path, keys, "ann")
    assert _signature_problem(sha, repo / "missing", repo) == "missing is not in the commit"
