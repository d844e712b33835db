"""One exception tree for every expected failure, each class carrying its exit code.

The CLI catches ``BasculeError`` once and exits with ``error.exit``; anything else is a bug
and may show a traceback. Split by what the caller can do, as httpx's tree is: fix the input
(``UsageError``), try again later (``Unreachable``), or read why it failed (``OperationFailed``).
Pure: no I/O.
"""

from __future__ import annotations

from typing import ClassVar

from bascule.outcome import Exit


class BasculeError(Exception):
    """An expected failure; its message says what is wrong and what to do."""

    exit: ClassVar[Exit] = Exit.FAILED


class UsageError(BasculeError, ValueError):
    """Bad input (argument, configuration, environment variable); nothing was changed.

    A ValueError too, so that pydantic validators may raise it and point at the field."""

    exit = Exit.USAGE


class Refused(BasculeError):
    """Refused before changing anything, for example another deploy holds the lock."""

    exit = Exit.USAGE


class OperationFailed(BasculeError):
    """An operation was tried and did not succeed."""

    exit = Exit.FAILED


class Unreachable(OperationFailed):
    """A service Bascule needs (the Prefect API, the Kubernetes API) did not answer."""

    exit = Exit.UNREACHABLE


class LockLost(BaseException):
    """Raised into a run whose deploy lock was taken over (``bascule rollback --break-lock``,
    or a holder cut off from the API for longer than its lease): a BaseException, so that the
    run stops like a killed one instead of cleaning up, and the next run reconciles."""

    exit: ClassVar[Exit] = Exit.INTERRUPTED
    said = (
        "stopped: this run's deploy lock was taken over (bascule rollback --break-lock, or it "
        "could not renew it); the next deploy, rollback or recovery puts right what it left"
    )
