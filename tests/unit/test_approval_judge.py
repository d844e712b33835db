"""The approval gate fails safe: only a ticked approve with an approver's name approves."""

from __future__ import annotations

import pytest

from flows.approval import Approval, judge


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
