"""Four eyes and more than one approver: a signed approval counts once per key and per
principal, never from the deployed commit's author or signer, and not at all when that
commit cannot be read (fail safe). The commit is read by real git from a repository made
here, with commits signed by real SSH keys."""

from __future__ import annotations

import logging
import subprocess
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bascule.flows import approval
from bascule.flows.approval import Approval, Signing, approved_by, judge
from bascule.gitcommit import read_commit
from bascule.history import Approver, Release
from bascule.notifications import notice
from bascule.signoff import (
    Commit,
    Request,
    Signer,
    UnknownCommit,
    Unverified,
    four_eyes_problem,
    repeat_problem,
)
from bascule.sshsig import sign, verify
from tests.support.signers import allowed_signers, commit, fingerprint, keypair

ANN = Signer("ann@example.com", "SHA256:ann+key")
BOB = Signer("bob@example.com", "SHA256:bob+key")
CAROL = Signer("carol@example.com", "SHA256:carol+key")
SHA = "4f2a1c9e0b7d3a5f6c8e1d2b4a6c8e0f1a3b5c7d"
BY_ANN = Commit(SHA, "ann@example.com", "Ann Lee", None)


def test_an_approver_other_than_the_author_and_signer_may_approve() -> None:
    assert four_eyes_problem(BOB, BY_ANN) is None
    signed_by_carol = Commit(SHA, "ann@example.com", "Ann Lee", CAROL.fingerprint)
    assert four_eyes_problem(BOB, signed_by_carol) is None
    assert (
        four_eyes_problem(ANN, Commit(SHA, "carol@example.com", "Carol", BOB.fingerprint)) is None
    )


@pytest.mark.parametrize(
    "author",
    [
        Commit(SHA, "ann@example.com", "Ann Lee"),
        Commit(SHA, "Ann@Example.COM", "Ann Lee"),  # email case is not identity
        Commit(SHA, "ann@users.noreply.example", "ann@example.com"),
    ],
    ids=["email", "email-case", "name"],
)
def test_the_author_may_not_approve_their_own_commit(author: Commit) -> None:
    problem = four_eyes_problem(ANN, author)
    assert problem == (
        f"four eyes: ann@example.com is the author of commit {SHA[:12]} "
        f"({author.author_name} <{author.author_email}>); another person's key must approve it"
    )


def test_the_key_that_signed_the_commit_may_not_approve_it_under_any_name() -> None:
    # Carol authored it on paper; Bob's key signed it, and Bob's key is what approves.
    signed_by_bob = Commit(SHA, "carol@example.com", "Carol", BOB.fingerprint)
    assert four_eyes_problem(BOB, signed_by_bob) == (
        f"four eyes: the key {BOB.fingerprint} signed commit {SHA[:12]} itself; "
        "another person's key must approve it"
    )
    # The same key listed under another principal is still the same key.
    assert four_eyes_problem(Signer("robert", BOB.fingerprint), signed_by_bob) is not None


def test_a_commit_that_cannot_be_read_admits_nobody() -> None:
    unknown = UnknownCommit("the run was given no commit")
    for signer in (ANN, BOB, CAROL):
        problem = four_eyes_problem(signer, unknown)
        assert problem is not None
        assert problem.startswith("four eyes: the run was given no commit, so no approval")
        assert "deploy with the commit the image was built from" in problem


def test_each_key_and_each_principal_counts_once() -> None:
    assert repeat_problem(ANN, []) is None
    assert repeat_problem(BOB, [ANN]) is None
    assert repeat_problem(ANN, [BOB, ANN]) == (
        f"the key {ANN.fingerprint} (ann@example.com) has signed this run already and counts "
        "once: another approver's key must sign"
    )
    # One person listed with a second key.
    second_key = Signer("ann@example.com", "SHA256:ann+laptop")
    assert repeat_problem(second_key, [ANN]) == (
        f"ann@example.com has signed this run already (with the key {ANN.fingerprint}) and "
        "counts once: another approver must sign"
    )
    # One key listed under a second principal.
    assert repeat_problem(Signer("annie", ANN.fingerprint), [ANN]) is not None


def approver(signer: Signer, comment: str = "") -> Approver:
    return Approver(signer.principal, signer.fingerprint, "2026-12-06T23:30:00Z", comment)


REQUEST = Request("5f0c7a52-0000-4000-8000-000000000001", "production", "shop", "shop:v2", "r1")


def test_a_signing_applies_four_eyes_before_counting(tmp_path: Path) -> None:
    signing = Signing(REQUEST, tmp_path / "allowed_signers", 2, BY_ANN)
    assert signing.problem(ANN, []) is not None and "author" in str(signing.problem(ANN, []))
    assert signing.problem(BOB, []) is None
    assert "counts once" in str(signing.problem(BOB, [approver(BOB)]))
    assert signing.problem(CAROL, [approver(BOB)]) is None
    # Four eyes off: the author is one approver like any other.
    assert Signing(REQUEST, tmp_path / "allowed_signers", 2).problem(ANN, []) is None


def test_the_form_says_who_signed_and_how_many_more(tmp_path: Path) -> None:
    signing = Signing(REQUEST, tmp_path / "allowed_signers", 3, BY_ANN)
    assert signing.progress([approver(BOB)]) == (
        f"**Signed so far (1 of 3)**: bob@example.com (SSH key `{BOB.fingerprint}`). "
        "2 more approvals needed, each signed by another approver's key.\n\n"
    )
    text = signing.instructions()
    assert "This switch needs 3 approvals, each signed by a different approver's key." in text
    assert f"Four eyes: not the author of commit `{SHA[:12]}` (Ann Lee <ann@example.com>)" in text
    unknown = Signing(REQUEST, tmp_path / "allowed_signers", 1, UnknownCommit("no commit"))
    assert "**No approval can count**: four eyes, and no commit." in unknown.instructions()
    plain = Signing(REQUEST, tmp_path / "allowed_signers").instructions()
    assert "This switch needs" not in plain and "our eyes" not in plain


def test_an_approval_by_several_records_each_with_the_first_as_approver() -> None:
    decision = approved_by([approver(BOB, "LGTM"), approver(CAROL)])
    assert (decision.approved, decision.approver, decision.approver_key) == (
        True,
        "bob@example.com",
        BOB.fingerprint,
    )
    assert decision.comment == "bob@example.com: LGTM"
    assert [a.principal for a in decision.signers] == ["bob@example.com", "carol@example.com"]
    assert decision.reason == (
        f"approved by bob@example.com (SSH key {BOB.fingerprint}) and "
        f"carol@example.com (SSH key {CAROL.fingerprint})"
    )
    # One signer: the record older readers know, unchanged.
    one = judge(Approval(approve=True, approver="x", comment="ok"), BOB, at="2026-12-06T23:30:00Z")
    assert (one.approver, one.comment, one.signers) == (
        "bob@example.com",
        "ok",
        (approver(BOB, "ok"),),
    )


# --- reading the commit with git -----------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("keys")
    return {name: keypair(tmp, name) for name in ("ann", "bob")}


def test_git_tells_the_author_and_the_key_that_signed(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    repo = tmp_path / "config"
    repo.mkdir()
    (repo / "production.yaml").write_text("app: shop\n")
    signed = commit(repo, "ann@example.com", "Ann Lee", keys["ann"])
    plain = commit(repo, "bob@example.com", "Bob")
    assert read_commit(signed, repo) == Commit(
        signed, "ann@example.com", "Ann Lee", fingerprint(keys["ann"])
    )
    # A short SHA, from a directory inside the checkout.
    (repo / "sub").mkdir()
    assert read_commit(plain[:12], repo / "sub") == Commit(plain, "bob@example.com", "Bob", None)


def test_a_commit_whose_signature_is_bad_is_unknown(tmp_path: Path, keys: dict[str, Path]) -> None:
    """Ann's signature over other content: nobody can say who signed it, so nobody approves."""
    repo = tmp_path / "config"
    repo.mkdir()
    sha = commit(repo, "ann@example.com", "Ann Lee", keys["ann"])
    raw = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "commit", sha], capture_output=True, check=True
    ).stdout
    assert b"-----BEGIN SSH SIGNATURE-----" in raw
    forged = (
        subprocess.run(
            ["git", "-C", str(repo), "hash-object", "-t", "commit", "-w", "--stdin"],
            input=raw.replace(b"change", b"chAnge"),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    found = read_commit(forged, repo)
    assert found == UnknownCommit(f"the signature of commit {forged} is bad")


def test_the_author_of_the_deployed_commit_cannot_approve_it(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """End to end with real signatures: Ann commits, Ann's approval is refused, Bob's counts."""
    repo = tmp_path / "config"
    repo.mkdir()
    signers = allowed_signers(
        repo / "allowed_signers", {"ann@example.com": keys["ann"], "bob@example.com": keys["bob"]}
    )
    sha = commit(repo, "ann@example.com", "Ann Lee")
    signing = Signing(REQUEST, signers, 1, read_commit(sha, repo))
    ann = verify(REQUEST, sign(REQUEST, keys["ann"]), signers)
    bob = verify(REQUEST, sign(REQUEST, keys["bob"]), signers)
    assert isinstance(ann, Signer) and isinstance(bob, Signer)
    assert "four eyes: ann@example.com is the author of commit" in str(signing.problem(ann, []))
    assert signing.problem(bob, []) is None


@pytest.mark.parametrize(
    ("sha", "why"),
    [
        (None, "the run was given no commit"),
        ("", "the run was given no commit"),
        ("0123456789abcdef0123456789abcdef01234567", "is not in the checkout of"),
        ("HEAD", "'HEAD' is not a commit SHA"),
        ("HEAD~0", "'HEAD~0' is not a commit SHA"),
    ],
    ids=["none", "empty", "absent", "a-name", "a-revision"],
)
def test_a_commit_git_cannot_read_is_unknown(tmp_path: Path, sha: str | None, why: str) -> None:
    repo = tmp_path / "config"
    repo.mkdir()
    commit(repo, "ann@example.com", "Ann Lee")
    found = read_commit(sha, repo)
    assert isinstance(found, UnknownCommit) and why in found.reason, found


def test_a_commit_parameter_is_never_a_git_option(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    repo.mkdir()
    commit(repo, "ann@example.com", "Ann Lee")
    leak = tmp_path / "leak"
    found = read_commit(f"--output={leak}", repo)
    assert isinstance(found, UnknownCommit) and "is not in the checkout of" in found.reason
    assert not leak.exists()


def test_a_directory_outside_any_checkout_is_unknown(tmp_path: Path) -> None:
    found = read_commit("0123456789abcdef", tmp_path)
    assert isinstance(found, UnknownCommit)
    assert f"is not in the checkout of {tmp_path}" in found.reason


def test_who_decided_is_every_signer_else_the_recorded_name() -> None:
    """What `bascule history` and the notifications name."""
    release = Release("r1", "shop:v2", "green", None, None, "2026-12-06T23:00:00Z")
    assert release.decided_by is None
    assert replace(release, approver="Ann Lee").decided_by == "Ann Lee"
    two = replace(release, approver="bob@example.com", signers=(approver(BOB), approver(CAROL)))
    assert two.decided_by == "bob@example.com, carol@example.com"
    # Bob signed, then Dan rejected: Dan decided.
    rejected = replace(release, result="rejected", approver="Dan", signers=(approver(BOB),))
    assert rejected.decided_by == "Dan"
    assert (
        notice("succeeded", "shop", "production", two, now=datetime.now(UTC)).approver
        == two.decided_by
    )


# --- the paused run's loop, its pauses scripted ---------------------------------------------------


class Script:
    """Answers the run's pauses in turn (None: the deadline passed) and keeps what each
    pause showed; signatures are verified as the names say (``verify`` stands in)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *answers: Approval | None) -> None:
        self.answers = list(answers)
        self.pauses: list[tuple[str, str]] = []  # (pause key, form text)
        keys = {"ann": ANN, "bob": BOB, "carol": CAROL}

        class Client:
            def create_flow_run_input(self, *args: object) -> None:
                pass

        monkeypatch.setattr(approval, "flow_run", SimpleNamespace(id=REQUEST.run))
        monkeypatch.setattr(approval, "get_client", lambda sync_client: nullcontext(Client()))
        monkeypatch.setattr(approval, "get_run_logger", lambda: logging.getLogger("test"))
        monkeypatch.setattr(approval, "_pause_for_answer", self.pause)
        monkeypatch.setattr(
            approval, "verify", lambda request, sig, path: keys.get(sig, Unverified("bad"))
        )

    def pause(self, client: object, run: object, key: str, text: str, deadline: float) -> Any:
        self.pauses.append((key, text))
        return self.answers.pop(0)


def signed(by: str, comment: str = "") -> Approval:
    return Approval(approve=True, approver="typed", comment=comment, signature=by)


def test_the_run_switches_only_once_two_different_keys_signed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = Script(
        monkeypatch, signed("ann"), signed("bob", "LGTM"), signed("bob"), signed("carol")
    )
    refused: list[str] = []
    signing = Signing(REQUEST, tmp_path / "allowed_signers", 2, BY_ANN)
    decision = approval.request_approval("form", 60, signing, on_refused=refused.append)
    assert decision.approved and [a.principal for a in decision.signers] == [
        "bob@example.com",
        "carol@example.com",
    ]
    assert (decision.approver, decision.comment) == ("bob@example.com", "bob@example.com: LGTM")
    assert [key for key, _ in script.pauses] == [
        "approval",
        "approval-1",
        "approval-2",
        "approval-3",
    ]
    assert len(refused) == 2
    assert refused[0].startswith("four eyes: ann@example.com is the author")
    assert "counts once" in refused[1]
    # The form after Bob's first signature, then after his second.
    assert script.pauses[2][1].startswith("**Signed so far (1 of 2)**: bob@example.com")
    assert "**Not approved yet** — the key SHA256:bob+key" in script.pauses[3][1]


def test_a_deadline_or_a_rejection_after_one_signer_switches_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    signing = Signing(REQUEST, tmp_path / "allowed_signers", 2)
    Script(monkeypatch, signed("bob"), None)
    late = approval.request_approval("form", 60, signing)
    assert (late.approved, late.timed_out) == (False, True)
    assert late.reason == "no decision within 60 s; signed by 1 of 2: bob@example.com"
    assert [a.principal for a in late.signers] == ["bob@example.com"]
    Script(monkeypatch, signed("bob"), Approval(approve=False, approver="Dan", comment="no"))
    stopped = approval.request_approval("form", 60, signing)
    assert (stopped.approved, stopped.approver, stopped.reason) == (False, "Dan", "rejected by Dan")
    assert [a.principal for a in stopped.signers] == ["bob@example.com"]


def test_an_unknown_commit_refuses_every_signer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Script(monkeypatch, signed("ann"), signed("bob"), None)
    refused: list[str] = []
    signing = Signing(REQUEST, tmp_path / "s", 1, UnknownCommit("the run was given no commit"))
    decision = approval.request_approval("form", 60, signing, on_refused=refused.append)
    assert (decision.approved, decision.signers) == (False, ())
    assert len(refused) == 2 and all(
        r.startswith("four eyes: the run was given no") for r in refused
    )
