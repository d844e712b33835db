"""How a run ends and what the ``bascule`` command exits with: the one table of both.

Pure: no I/O, no Prefect import. Flows name their final states with ``StateName``; the CLI,
the trigger and the README read exit codes from ``Exit`` and ``exit_code``, and every
command's ``--help`` lists its codes from ``EXIT_MEANINGS``. Every command's failure message
starts with ``ERROR_PREFIX``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, StrEnum


class Exit(IntEnum):
    """Exit statuses of the ``bascule`` command."""

    COMPLETED = 0
    FAILED = 1
    USAGE = 2
    ROLLED_BACK = 3
    REJECTED = 4
    APPROVAL_TIMED_OUT = 5
    WAIT_TIMED_OUT = 6
    UNREACHABLE = 7
    INTERRUPTED = 130


EXIT_MEANINGS: dict[Exit, str] = {
    Exit.COMPLETED: "completed (deployed, rolled back on request, or already serving)",
    Exit.FAILED: "the operation failed; traffic stayed on or went back to the old version",
    Exit.USAGE: "usage or configuration error, or another deploy holds the lock; nothing changed",
    Exit.ROLLED_BACK: "rolled back automatically: the checks after the switch failed",
    Exit.REJECTED: "rejected at the approval gate; traffic did not move",
    Exit.APPROVAL_TIMED_OUT: "nobody approved in time; traffic did not move",
    Exit.WAIT_TIMED_OUT: "bascule trigger or abort stopped waiting (--timeout); the run goes on",
    Exit.UNREACHABLE: "the Prefect or Kubernetes API could not be reached",
    Exit.INTERRUPTED: (
        "interrupted (Ctrl-C), or stopped: aborted (bascule abort, a cancel in Prefect), or "
        "its deploy lock was taken over"
    ),
}

# A few words for a summary's title or the last line of a log: "…: rolled back (exit 3)".
RESULTS: dict[Exit, str] = {
    Exit.COMPLETED: "completed",
    Exit.FAILED: "failed",
    Exit.USAGE: "refused; nothing changed",
    Exit.ROLLED_BACK: "rolled back after the switch",
    Exit.REJECTED: "rejected at approval",
    Exit.APPROVAL_TIMED_OUT: "approval timed out",
    Exit.WAIT_TIMED_OUT: "still running when the trigger stopped waiting",
    Exit.UNREACHABLE: "API unreachable",
    Exit.INTERRUPTED: "interrupted",
}


class StateName(StrEnum):
    """Names Bascule gives a run's final Failed state, to say why it did not deploy."""

    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    REJECTED = "Rejected"
    # Not "TimedOut": Prefect gives that name to its own timeouts (a concurrency slot not
    # acquired in time, a flow's timeout_seconds), which are not an approval's.
    APPROVAL_TIMED_OUT = "ApprovalTimedOut"
    LOCK_HELD = "LockHeld"
    # Refused before anything changed: a required secret without a value.
    REFUSED = "Refused"
    # Not a Failed state's: the Cancelled state of a run stopped on request (bascule abort,
    # a cancel in Prefect's UI or API) that put right what it had started.
    ABORTED = "Aborted"


# Prefect's state types in which a flow run has ended; Paused and the rest have not.
TERMINAL_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})

_FAILED_NAMED: dict[str, Exit] = {
    StateName.ROLLED_BACK: Exit.ROLLED_BACK,
    StateName.REJECTED: Exit.REJECTED,
    StateName.APPROVAL_TIMED_OUT: Exit.APPROVAL_TIMED_OUT,
    StateName.LOCK_HELD: Exit.USAGE,  # refused before doing anything, like a usage error
    StateName.REFUSED: Exit.USAGE,
}


def exit_code(state_type: str, state_name: str | None) -> Exit | None:
    """The exit code for a flow run in this state, or None while the run has not ended.

    Only a Failed state carries Bascule's meaning in its name; a Crashed run failed whatever
    it is called, and a Cancelled one was stopped on request (aborted), as if interrupted.
    """
    state_type = state_type.upper()
    if state_type not in TERMINAL_TYPES:
        return None
    if state_type == "COMPLETED":
        return Exit.COMPLETED
    if state_type == "CANCELLED":
        return Exit.INTERRUPTED
    if state_type == "FAILED" and state_name in _FAILED_NAMED:
        return _FAILED_NAMED[state_name]
    return Exit.FAILED


# The start of every expected failure's message, whatever the command (and argparse's usage
# errors): one word for scripts and people to look for, the way `error:` reads in git's.
ERROR_PREFIX = "bascule: error: "


def error_line(message: str) -> str:
    """An expected failure's message as the command prints it."""
    return f"{ERROR_PREFIX}{message}"


def describe_exits(codes: Iterable[Exit]) -> str:
    """The ``exit codes:`` block of a command's ``--help``."""
    lines = [f"  {int(code):<3} {EXIT_MEANINGS[code]}" for code in sorted(codes)]
    return "exit codes:\n" + "\n".join(lines)


def exit_table() -> str:
    """The README's exit code table, rendered from ``EXIT_MEANINGS``."""
    rows = [f"| {int(code)} | {meaning} |" for code, meaning in EXIT_MEANINGS.items()]
    return "\n".join(["| code | meaning |", "|---|---|", *rows])
