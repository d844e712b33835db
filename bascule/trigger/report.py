"""What the trigger learned about its run, for the job summary and step outputs. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from bascule.outcome import Exit

if TYPE_CHECKING:
    from bascule.start_run import RunSeen


@dataclass
class Report:
    """Filled in as the trigger goes."""

    environment: str
    image: str
    commit: str | None
    exit_code: Exit | None = None
    started_only: bool = False
    error: str | None = None
    run_name: str | None = None
    run_id: UUID | None = None
    run_url: str | None = None
    state: str | None = None
    state_message: str | None = None
    created: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    digest: str | None = None  # the digest the release ran, from the run's label

    def take(self, run: RunSeen, url: str) -> None:
        # Imported once the run exists: promotion's rules cost the trigger's start otherwise.
        from bascule.promotion import DIGEST_LABEL

        self.run_id, self.run_name, self.run_url = run.id, run.name, url
        if ran := run.labels.get(DIGEST_LABEL):
            self.digest = str(ran)
        if run.state_type is not None:
            self.state = state_label(run.state_name, run.state_type)
            self.state_message = run.state_message
        self.created, self.start, self.end = run.created, run.start_time, run.end_time


def state_label(name: str | None, state_type: str) -> str:
    return name or state_type.title()


def format_duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
