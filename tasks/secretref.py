"""Reads a secret value from where a `SecretRef` points: the flow process's environment or a
Prefect Secret block. Messages name the source, never the value."""

from __future__ import annotations

import os
from typing import cast

from bascule.config import SecretRef
from bascule.errors import UsageError


def resolve(ref: SecretRef, what: str) -> str:
    """The value behind ``ref``; ``what`` says what it is for (``migrations.database_url``).
    A missing value is a usage error raised before anything changes."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise UsageError(
                f"{what}: environment variable {ref.env} is not set or empty — set it in the "
                "flow's environment (a GitHub Environment secret, a work pool variable)"
            )
        return value
    from prefect.blocks.system import Secret  # only when a block is named: Prefect is slow to load

    name = str(ref.prefect_secret)
    try:
        # From sync code load() returns the block; its annotation covers the async use too.
        value = cast(Secret[str], Secret.load(name)).get()
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise UsageError(
            f"{what}: no Prefect Secret block {ref.prefect_secret!r} — create it with "
            f"`prefect block create secret` or in the UI (Blocks), or fix the name ({exc})"
        ) from None
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what}: Prefect Secret block {name!r} holds no text")
    return value
