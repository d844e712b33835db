"""bascule.tasks.artifacts: what a run's artifacts send to Prefect has the known secrets masked."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bascule.redact import KNOWN, MASK
from bascule.tasks import artifacts

SECRET = "artifact-canary-9c2e51aa"


def test_artifacts_leave_for_prefect_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    def record(*args: Any, **kwargs: Any) -> None:
        sent.append({"args": args, **kwargs})

    for name in ("create_markdown_artifact", "create_table_artifact", "create_progress_artifact"):
        monkeypatch.setattr(artifacts, name, record)
    KNOWN.add([SECRET])
    writer = artifacts.Writer(logging.getLogger("test"))
    writer.progress(10.0, f"smoke: body {SECRET}")
    writer.markdown("k", f"| check | quoted `{SECRET}` |", f"failed: {SECRET}")
    writer.table("t", [{"detail": f"got {SECRET}"}], "analysis")
    writer.flush()
    assert len(sent) == 3 and SECRET not in repr(sent), sent
    assert sent[1]["markdown"] == f"| check | quoted `{MASK}` |"
    assert sent[2]["table"] == [{"detail": f"got {MASK}"}]
