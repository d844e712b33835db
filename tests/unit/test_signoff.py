"""Signed approvals: the message a signature binds to one run, the pasted signature put back
in shape, allowed_signers lines checked, and ssh-keygen's verdict on real signatures (keys
made for the test)."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bascule.errors import UsageError
from bascule.signoff import (
    ARMOR_BEGIN,
    NAMESPACE,
    Request,
    Signer,
    Unverified,
    armor,
    sign_command,
    signers_count,
    signers_line_problem,
)
from bascule.sshsig import sign, verify
from tests.support.signers import allowed_signers, fingerprint, keypair

REQUEST = Request(
    run="5f0c7a52-0000-4000-8000-000000000001",
    environment="production",
    app="shop",
    image="registry.example/shop:v2",
    release="r20261128090000-abc123",
)


def test_the_message_names_everything_the_approval_is_about() -> None:
    assert REQUEST.message() == (
        "bascule-approval approve=true run=5f0c7a52-0000-4000-8000-000000000001 "
        "environment=production app=shop image=registry.example/shop:v2 "
        "release=r20261128090000-abc123"
    )


def test_the_shown_command_signs_exactly_the_message(tmp_path: Path) -> None:
    key = keypair(tmp_path, "ann")
    command = sign_command(REQUEST, str(key))
    assert command.endswith(f"| ssh-keygen -Y sign -f {key} -n {NAMESPACE}")
    # The printf part, run by a shell, gives the message byte for byte (no newline).
    printf = command.split(" | ")[0]
    out = subprocess.run(["sh", "-c", printf], capture_output=True, text=True, check=True)
    assert out.stdout == REQUEST.message()
    assert shlex.split(printf)[2] == REQUEST.message()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("keys")
    return {name: keypair(tmp, name) for name in ("ann", "eve")}


@pytest.fixture
def signers(tmp_path: Path, keys: dict[str, Path]) -> Path:
    return allowed_signers(tmp_path / "allowed_signers", {"ann@example.com": keys["ann"]})


def test_a_listed_key_signing_this_run_verifies_as_its_principal(
    keys: dict[str, Path], signers: Path
) -> None:
    signature = sign(REQUEST, keys["ann"])
    assert verify(REQUEST, signature, signers) == Signer(
        "ann@example.com", fingerprint(keys["ann"])
    )


def test_a_pasted_signature_without_its_line_breaks_still_verifies(
    keys: dict[str, Path], signers: Path
) -> None:
    signature = sign(REQUEST, keys["ann"])
    one_line = signature.replace("\n", "")  # what a one-line form field keeps
    assert armor(one_line) == signature
    spaced = "  " + signature.replace("\n", " ") + "\n"
    assert isinstance(verify(REQUEST, spaced, signers), Signer)
    body = "".join(signature.splitlines()[1:-1])  # the base64 alone
    assert isinstance(verify(REQUEST, body, signers), Signer)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"run": "5f0c7a52-0000-4000-8000-000000000002"}, "does not match this run"),
        ({"image": "registry.example/shop:evil"}, "does not match this run"),
        ({"environment": "staging"}, "does not match this run"),
        ({"release": "r20261128090000-ffffff"}, "does not match this run"),
    ],
    ids=["another-run", "another-image", "another-environment", "another-release"],
)
def test_a_signature_of_another_request_does_not_verify(
    keys: dict[str, Path], signers: Path, change: dict[str, str], why: str
) -> None:
    signature = sign(replace(REQUEST, **change), keys["ann"])
    verdict = verify(REQUEST, signature, signers)
    assert isinstance(verdict, Unverified) and why in verdict.reason, verdict


def test_an_unlisted_key_a_forgery_or_nothing_does_not_verify(
    keys: dict[str, Path], signers: Path
) -> None:
    eve = verify(REQUEST, sign(REQUEST, keys["eve"]), signers)
    assert isinstance(eve, Unverified) and "not in allowed_signers" in eve.reason
    # Ann's key, the signature bytes altered.
    good = sign(REQUEST, keys["ann"]).splitlines()
    body = "".join(good[1:-1])
    forged = body[:-10] + ("A" if body[-10] != "A" else "B") + body[-9:]
    verdict = verify(REQUEST, forged, signers)
    assert isinstance(verdict, Unverified), verdict
    # Another namespace (e.g. a git commit signature by the same key).
    done = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(keys["ann"]), "-n", "git"],
        input=REQUEST.message(),
        text=True,
        check=True,
        capture_output=True,
    )
    assert isinstance(verify(REQUEST, done.stdout, signers), Unverified)
    assert verify(REQUEST, "  ", signers) == Unverified(
        "no signature: this environment takes only signed approvals"
    )
    assert verify(REQUEST, "LGTM!", signers) == Unverified(
        "not an SSH signature (expected the output of ssh-keygen -Y sign)"
    )


def test_armor_rewraps_as_ssh_keygen_writes() -> None:
    body = "QUJD" * 40
    text = armor(f"{ARMOR_BEGIN}{body}-----END SSH SIGNATURE-----")
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == ARMOR_BEGIN and lines[-1] == "-----END SSH SIGNATURE-----"
    assert [len(line) for line in lines[1:-1]] == [70, 70, 20]
    assert armor(" \n ") is None


def test_signing_with_a_missing_key_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such key file"):
        sign(REQUEST, tmp_path / "nope")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("", False),
        ("# who may approve", False),
        ("ann@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== ann", False),
        ('ann,bob namespaces="bascule-approval,git" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5', False),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", True),  # no principal
        ("ann@example.com ssh-ed25519", True),  # no key
        ("ann@example.com AAAAC3NzaC1lZDI1NTE5", True),  # no key type
        ("ann ssh-ed25519 not*base64", True),
        ('ann namespaces="open ssh-ed25519 AAAA', True),  # unclosed quote
    ],
)
def test_allowed_signers_lines(line: str, problem: bool) -> None:
    assert (signers_line_problem(line) is not None) is problem


def test_an_allowed_signers_file_counts_its_keys_not_its_comments() -> None:
    assert signers_count("# who may approve\n\n   # nobody yet\n") == 0
    text = "# who\nann@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 ann\nann ssh-ed25519\n"
    assert signers_count(text) == 1  # the broken line is the validator's to report
    assert signers_count(text + f"bob ssh-ed25519 {'A' * 68}\n") == 2


def test_a_bad_allowed_signers_line_says_what_to_write() -> None:
    assert signers_line_problem("ann@example.com ssh-ed25519") == (
        "not an allowed_signers line — write `principal ssh-ed25519 AAAA…` (the principal, "
        "then the public key as in the .pub file)"
    )
    unclosed = signers_line_problem('ann namespaces="open ssh-ed25519 AAAA')
    assert unclosed is not None and unclosed.endswith(" — check the quotes of its options")
