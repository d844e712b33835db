"""Following a flow run: print its states and logs as they come, until it ends or the
trigger stops waiting, and say which exit code its end means."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
from prefect.client.schemas.objects import FlowRun, Log, State, StateType
from prefect.client.schemas.sorting import LogSort

from bascule.errors import BasculeError, Unreachable
from bascule.markdown import one_line
from bascule.outcome import RESULTS, Exit, exit_code
from bascule.prefect_client import Prefect, api_errors, patiently
from bascule.start_run import RunSeen
from bascule.trigger.github import Output
from bascule.trigger.options import Options
from bascule.trigger.report import Report, format_duration, state_label

# Logs reach the API in batches and not always in timestamp order; asking again for a window
# before the newest seen (and skipping ids already printed) catches the late ones.
LOG_LOOKBACK = timedelta(seconds=30)
LOG_PAGE = 200
HEARTBEAT_SECONDS = 300.0


def format_log(entry: Log) -> list[str]:
    """A log entry as output lines; continuation lines are indented, so no line of a message
    can pose as a line of ours (or as a GitHub workflow command, which must start a line)."""
    stamp = entry.timestamp.astimezone(UTC).strftime("%H:%M:%S")
    level = logging.getLevelName(entry.level)
    first, *rest = entry.message.splitlines() or [""]
    return [f"{stamp} {level:<8} {first}", *(f"{'':18}| {line}" for line in rest)]


def format_state(state: State) -> str:
    stamp = state.timestamp.astimezone(UTC).strftime("%H:%M:%S")
    line = f"{stamp} {'STATE':<8} {state_label(state.name, state.type.value)}"
    if state.message:
        line += f": {one_line(state.message)}"
    return line


@dataclass
class Follower:
    """Prints what happens to one flow run; remembers what it has printed."""

    prefect: Prefect
    out: Output
    report: Report
    options: Options
    run_id: UUID
    url: str
    states_seen: set[UUID] = field(default_factory=set)
    logs_seen: set[UUID] = field(default_factory=set)
    newest_log: datetime | None = None

    def follow(self) -> Exit:
        """Until the run ends (its exit code) or ``wait_timeout`` passes (WAIT_TIMED_OUT)."""
        timeout = self.options.wait_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                run = patiently(
                    self._poll,
                    self.options.api_patience,
                    self.options.poll_interval,
                    self.out.retrying,
                )
            except BasculeError as exc:
                lost = "" if isinstance(exc, Unreachable) else "lost the flow run: "
                raise Unreachable(f"{lost}{exc}; the run may still go on: {self.url}") from None
            self.report.take(seen(run), self.url)
            code = exit_code(run.state.type.value, run.state.name) if run.state else None
            if code is not None:
                self._settle_logs()
                self.out.line(
                    f"bascule: flow run ended {self.report.state}{_took(run)}: "
                    f"{RESULTS[code]} (exit {int(code)})"
                )
                return code
            if deadline is not None and time.monotonic() >= deadline:
                self.out.line(
                    f"bascule: stopped waiting after {timeout:.0f}s; the run is still "
                    f"{self.report.state} and goes on: {self.url}"
                )
                return Exit.WAIT_TIMED_OUT
            if time.monotonic() - self.out.last_write >= HEARTBEAT_SECONDS:
                self.out.line(f"bascule: still {self.report.state}: {self.url}")
            time.sleep(self.options.poll_interval)

    def _poll(self) -> FlowRun:
        """Reads the run and prints what happened to it since the last poll, oldest first.
        Prints only after every read succeeded, so a failed poll can be repeated whole."""
        client = self.prefect.client
        with api_errors(f"reading flow run {self.run_id}"):
            run: FlowRun = client.read_flow_run(self.run_id)
            news: list[State | Log] = []
            if run.state is not None and run.state.id not in self.states_seen:
                # The history, not only the current state: a short state between polls shows.
                states = client.read_flow_run_states(self.run_id)
                news.extend(s for s in states if s.id not in self.states_seen)
            news.extend(self._new_logs())
        news.sort(key=lambda item: item.timestamp)
        self._show(news)
        return run

    def _new_logs(self) -> list[Log]:
        after = None if self.newest_log is None else self.newest_log - LOG_LOOKBACK
        log_filter = LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[self.run_id]),
            timestamp=LogFilterTimestamp(after_=after) if after else None,
        )
        found: list[Log] = []
        offset = 0
        while True:
            batch: list[Log] = self.prefect.client.read_logs(
                log_filter=log_filter, limit=LOG_PAGE, offset=offset, sort=LogSort.TIMESTAMP_ASC
            )
            found.extend(entry for entry in batch if entry.id not in self.logs_seen)
            if len(batch) < LOG_PAGE:
                return found
            offset += LOG_PAGE

    def _show(self, news: list[State | Log]) -> None:
        for item in news:
            if isinstance(item, Log):
                if item.id in self.logs_seen:
                    continue
                self.logs_seen.add(item.id)
                if self.newest_log is None or item.timestamp > self.newest_log:
                    self.newest_log = item.timestamp
                for line in format_log(item):
                    self.out.line(line)
                continue
            if item.id in self.states_seen:
                continue
            self.states_seen.add(item.id)
            self.out.line(format_state(item))
            if item.type == StateType.PAUSED:
                self.out.line(
                    f"bascule: paused, waiting for approval in the Prefect UI (not an error): "
                    f"{self.url}"
                )

    def _settle_logs(self) -> None:
        """The last logs of a run arrive after its final state; give them a moment."""
        until = time.monotonic() + self.options.log_settle
        while time.monotonic() < until:
            time.sleep(min(1.0, self.options.log_settle))
            try:
                with api_errors("reading logs"):
                    news = self._new_logs()
            except BasculeError:
                return
            self._show(list(news))


def seen(run: FlowRun) -> RunSeen:
    """What the report keeps of Prefect's flow run."""
    state = run.state
    return RunSeen(
        id=run.id,
        name=run.name,
        state_type=None if state is None else state.type.value,
        state_name=None if state is None else state.name,
        state_message=None if state is None else state.message,
        labels=dict(run.labels),
        created=run.created,
        start_time=run.start_time,
        end_time=run.end_time,
    )


def _took(run: FlowRun) -> str:
    if run.start_time is None or run.end_time is None:
        return ""
    return f" after {format_duration((run.end_time - run.start_time).total_seconds())}"
