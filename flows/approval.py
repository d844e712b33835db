"""The approval gate: the run pauses with a form that shows what is being approved, and
only an explicit approval with an approver's name lets traffic move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from bascule.checks import CheckResult
from bascule.history import Release


class Approval(RunInput):
    approve: bool = Field(default=False, description="Tick to switch traffic to the new version")
    # Required and non-blank: the server refuses a resume without it and the run stays paused.
    approver: str = Field(min_length=1, pattern=r"\S", description="Your name, for the record")
    comment: str = Field(default="", description="Why; kept in the history")


@dataclass(frozen=True)
class Decision:
    approved: bool
    approver: str | None
    comment: str | None
    reason: str
    timed_out: bool = False


def description(
    app: str, environment: str, release: Release, checks: Sequence[CheckResult], preview: str
) -> str:
    rows = "\n".join(
        f"| {c.target} | {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in checks
    )
    return (
        f"## Approve {app} in {environment}?\n\n"
        f"- Image: `{release.previous_image or '(none)'}` → `{release.image}`\n"
        f"- Traffic: {release.previous_color or '(none)'} → {release.color}\n"
        f"- Preview: {preview}\n\n"
        "| target | check | result | detail |\n|---|---|---|---|\n" + rows + "\n\n"
        "Tick **approve** and give your name to switch traffic. Anything else — no name, "
        "approve left unticked, or no answer in time — means no switch."
    )


def judge(answer: Approval) -> Decision:
    """Fail safe: only a ticked approve with a named approver approves."""
    name = answer.approver.strip()
    comment = answer.comment.strip() or None
    if answer.approve and name:
        return Decision(True, name, comment, f"approved by {name}")
    if answer.approve:
        return Decision(False, None, comment, "approval without an approver's name is not valid")
    return Decision(False, name or None, comment, f"rejected by {name or 'an unnamed reviewer'}")


def request_approval(text: str, timeout_s: int) -> Decision:
    # Initial data would replace a field with a bare one and drop its constraints: only
    # the description is given.
    form = Approval.with_initial_data(description=text)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s)
    except FlowPauseTimeout:
        return Decision(False, None, None, f"no decision within {timeout_s} s", timed_out=True)
    return judge(answer)
