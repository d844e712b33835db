"""The one table of how a run ends and what ``bascule`` exits with (bascule/outcome.py)."""

from __future__ import annotations

import pytest

from bascule.outcome import (
    EXIT_MEANINGS,
    RESULTS,
    TERMINAL_TYPES,
    Exit,
    StateName,
    describe_exits,
    exit_code,
    exit_table,
)


@pytest.mark.parametrize(
    ("state_type", "state_name", "code"),
    [
        ("COMPLETED", "Completed", Exit.COMPLETED),
        ("COMPLETED", StateName.ROLLED_BACK, Exit.COMPLETED),  # a name counts only when Failed
        ("FAILED", StateName.ROLLED_BACK, Exit.ROLLED_BACK),
        ("FAILED", StateName.REJECTED, Exit.REJECTED),
        ("FAILED", StateName.APPROVAL_TIMED_OUT, Exit.APPROVAL_TIMED_OUT),
        ("FAILED", StateName.LOCK_HELD, Exit.USAGE),
        ("FAILED", StateName.REFUSED, Exit.USAGE),
        ("FAILED", StateName.FAILED, Exit.FAILED),
        ("FAILED", None, Exit.FAILED),
        ("FAILED", "TimedOut", Exit.FAILED),  # Prefect's own timeouts are no approval's
        # A crashed run failed, whatever its name says; a cancelled one was stopped on
        # request (bascule abort, Prefect's Cancel), as if interrupted.
        ("CRASHED", StateName.ROLLED_BACK, Exit.FAILED),
        ("CANCELLED", StateName.REJECTED, Exit.INTERRUPTED),
        ("CANCELLED", StateName.ABORTED, Exit.INTERRUPTED),
        ("CANCELLED", "Cancelled", Exit.INTERRUPTED),
        ("failed", StateName.REJECTED, Exit.REJECTED),  # the API's case does not matter
        ("completed", None, Exit.COMPLETED),
    ],
)
def test_a_finished_run_maps_to_its_exit_code(
    state_type: str, state_name: str | None, code: Exit
) -> None:
    assert exit_code(state_type, state_name) is code


@pytest.mark.parametrize("state_type", ["PAUSED", "RUNNING", "PENDING", "SCHEDULED", "paused"])
def test_a_run_that_has_not_ended_has_no_exit_code(state_type: str) -> None:
    assert exit_code(state_type, StateName.REJECTED) is None


def test_terminal_types_are_prefects_ended_states() -> None:
    assert {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} == TERMINAL_TYPES


def test_every_exit_code_has_a_meaning_and_a_result() -> None:
    assert set(EXIT_MEANINGS) == set(Exit) == set(RESULTS)
    assert len(set(Exit)) == len({int(code) for code in Exit})


def test_help_lists_the_given_codes_in_order_with_their_meanings() -> None:
    text = describe_exits([Exit.REJECTED, Exit.COMPLETED, Exit.INTERRUPTED])
    assert text == (
        "exit codes:\n"
        f"  0   {EXIT_MEANINGS[Exit.COMPLETED]}\n"
        f"  4   {EXIT_MEANINGS[Exit.REJECTED]}\n"
        f"  130 {EXIT_MEANINGS[Exit.INTERRUPTED]}"
    )


def test_the_readme_table_has_one_row_per_code() -> None:
    lines = exit_table().splitlines()
    assert lines[:2] == ["| code | meaning |", "|---|---|"]
    assert lines[2:] == [f"| {int(code)} | {EXIT_MEANINGS[code]} |" for code in EXIT_MEANINGS]
    assert lines[2] == f"| 0 | {EXIT_MEANINGS[Exit.COMPLETED]} |"
