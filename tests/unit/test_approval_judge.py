"""The approval gate fails safe: only a ticked approve with an approver's name approves."""

from __future__ import annotations

import pytest

from bascule.checks import CheckResult
from bascule.flows.approval import Approval, description, judge
from bascule.history import Release
from bascule.signoff import Signer, Unverified


def unchecked(**fields: object) -> Approval:
    """Input the form's schema refuses (the server keeps the run paused); judge() must still
    fail safe if such input ever reached it."""
    return Approval.model_construct(**{"approve": False, "approver": "", "comment": "", **fields})


NO_NAME = "approval without an approver's name is not valid"


@pytest.mark.parametrize(
    ("answer", "approved", "approver", "comment", "reason"),
    [
        (
            Approval(approve=True, approver="Ann Lee", comment="ship it"),
            True,
            "Ann Lee",
            "ship it",
            "approved by Ann Lee",
        ),
        (
            Approval(approve=True, approver="  Ann Lee\t", comment="   "),
            True,
            "Ann Lee",
            None,
            "approved by Ann Lee",
        ),
        (unchecked(approve=True, approver=""), False, None, None, NO_NAME),
        (unchecked(approve=True, approver=" \t\n", comment=" lgtm "), False, None, "lgtm", NO_NAME),
        (
            Approval(approve=False, approver="Bob", comment="v2 leaks memory"),
            False,
            "Bob",
            "v2 leaks memory",
            "rejected by Bob",
        ),
        (
            unchecked(approve=False, approver="   "),
            False,
            None,
            None,
            "rejected by an unnamed reviewer",
        ),
        (unchecked(), False, None, None, "rejected by an unnamed reviewer"),
    ],
    ids=[
        "approved",
        "approved-trimmed",
        "approve-without-name",
        "approve-whitespace-name",
        "rejected",
        "rejected-whitespace-name",
        "empty-form",
    ],
)
def test_judge(
    answer: Approval, approved: bool, approver: str | None, comment: str | None, reason: str
) -> None:
    decision = judge(answer)
    assert (decision.approved, decision.approver, decision.comment, decision.reason) == (
        approved,
        approver,
        comment,
        reason,
    )
    assert decision.timed_out is False


ANN = Signer("ann@example.com", "SHA256:I9+y9/Ktk4EKpUdEQ4wrZcOjRuJ0V1Awiq2cgzZ/1hg")


def test_a_signed_approval_records_the_signer_not_the_typed_name() -> None:
    decision = judge(Approval(approve=True, approver="Mallory", comment=" ok "), ANN)
    assert decision == judge(Approval(approve=True, approver="ann", comment="ok"), ANN)
    assert (decision.approved, decision.approver, decision.approver_key, decision.comment) == (
        True,
        "ann@example.com",
        ANN.fingerprint,
        "ok",
    )
    assert decision.reason == f"approved by ann@example.com (SSH key {ANN.fingerprint})"


def test_an_approval_whose_signature_does_not_verify_does_not_approve() -> None:
    refused = Unverified("the signing key is not in allowed_signers")
    decision = judge(Approval(approve=True, approver="Ann Lee", comment="go"), refused)
    assert (decision.approved, decision.approver, decision.approver_key) == (False, None, None)
    assert decision.reason == (
        "approval refused (typed name: Ann Lee): the signing key is not in allowed_signers"
    )
    assert decision.timed_out is False


def test_a_rejection_needs_no_signature_and_stays_unverified() -> None:
    decision = judge(Approval(approve=False, approver="Bob", comment="no"), None)
    assert (decision.approved, decision.approver, decision.approver_key) == (False, "Bob", None)


def test_the_form_keeps_a_multi_line_log_in_its_table_cell() -> None:
    release = Release(
        id="r1",
        image="shop:v2",
        color="green",
        previous_image="shop:v1",
        previous_color="blue",
        started="2025-03-01T12:00:00Z",
    )
    log = "the smoke Job failed: BackoffLimitExceeded\nFAILED test_cart | 500\n<b>3 passed</b>"
    checks = [
        CheckResult("smoke-job", "smoke/preview", False, log, 1, 4.0),
        CheckResult("version", "preview", True, "HTTP 200", 1, 0.1),
    ]
    text = description("shop", "production", release, checks, "https://api/preview/")
    lines = text.splitlines()
    start = lines.index("| target | check | result | detail |")
    rows = lines[start + 2 : start + 4]
    assert rows[1] == "| preview | version | pass | HTTP 200 |"
    # One line, four columns: the log's pipe and line breaks stay inside its cell.
    assert rows[0].replace("\\|", "").count("|") == 5
    assert "FAILED test_cart \\| 500 &lt;b&gt;3 passed&lt;/b&gt;" in rows[0]
    assert lines[start + 4] == ""
