"""The approval gate fails safe: only a ticked approve with an approver's name approves."""

from __future__ import annotations

import pytest

from flows.approval import Approval, judge

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
        (Approval(approve=True, approver=""), False, None, None, NO_NAME),
        (Approval(approve=True, approver=" \t\n", comment=" lgtm "), False, None, "lgtm", NO_NAME),
        (
            Approval(approve=False, approver="Bob", comment="v2 leaks memory"),
            False,
            "Bob",
            "v2 leaks memory",
            "rejected by Bob",
        ),
        (
            Approval(approve=False, approver="   "),
            False,
            None,
            None,
            "rejected by an unnamed reviewer",
        ),
        (Approval(), False, None, None, "rejected by an unnamed reviewer"),
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
