"""What the trigger writes for GitHub Actions: its log lines (secrets masked, the run's own
lines fenced with stop-commands), the job summary and the step outputs. Pure but for the
writes to the streams and files it is given."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from bascule.markdown import cell, code, one_line
from bascule.outcome import RESULTS, Exit
from bascule.redact import Redactor
from bascule.trigger.report import Report, format_duration, format_time


class Output:
    """Writes lines, with every known secret replaced by ``***`` as a last line of defence
    (a flow that logs a credential must not put it into a public CI log)."""

    def __init__(self, stream: TextIO, secret_values: Iterable[str | None]) -> None:
        self.stream = stream
        self.last_write = time.monotonic()
        self._retrying_said = False
        self._redactor = Redactor(secret_values)

    def redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def line(self, text: str = "") -> None:
        self.stream.write(self.redact(text) + "\n")
        self.stream.flush()
        self.last_write = time.monotonic()

    def retrying(self, problem: Exception) -> None:
        """Says once per trigger that the API does not answer: a flaky API must not flood
        the log."""
        if not self._retrying_said:
            self.line(f"bascule: Prefect API not answering ({problem}); retrying")
            self._retrying_said = True


@contextmanager
def commands_stopped(out: Output, enabled: bool) -> Iterator[None]:
    """Lines from the run (its logs) could hold GitHub workflow commands; stop-commands makes
    the runner ignore them until the random token is printed again."""
    if not enabled:
        yield
        return
    token = secrets.token_hex(16)
    out.line(f"::stop-commands::{token}")
    try:
        yield
    finally:
        out.line(f"::{token}::")


def annotate_failure(out: Output, environment: str, exit_code: Exit, url: str) -> None:
    """An error annotation on the workflow run, where people look first."""
    out.line(f"::error title=Deploy to {environment}::{RESULTS[exit_code]}: {url}")


_ICONS: dict[Exit, str] = {
    Exit.COMPLETED: "✅",
    Exit.ROLLED_BACK: "↩️",
    Exit.REJECTED: "⛔",
    Exit.APPROVAL_TIMED_OUT: "⏱️",
    Exit.WAIT_TIMED_OUT: "⏳",
}


def render_summary(report: Report) -> str:
    """The markdown job summary for one trigger."""
    if report.started_only:
        icon, result = "▶️", "started (not waited for)"
    elif report.exit_code is None:
        icon, result = "❔", "unknown"
    else:
        icon, result = _ICONS.get(report.exit_code, "❌"), RESULTS[report.exit_code]
        result += f" (exit {int(report.exit_code)})"
    rows: list[tuple[str, str]] = [
        ("Environment", code(report.environment)),
        ("Image", code(report.image)),
        ("Digest", code(report.digest) if report.digest else "-"),
        ("Commit", code(report.commit) if report.commit else "-"),
        ("Result", cell(result)),
    ]
    if report.state:
        state = report.state
        if report.state_message:
            state += f": {report.state_message}"
        rows.append(("Final state" if report.end else "State", cell(state)))
    if report.error:
        rows.append(("Error", cell(report.error)))
    if report.run_url:
        rows.append(("Flow run", f"[{cell(report.run_name or 'run')}]({report.run_url})"))
        rows.append(("Created", format_time(report.created)))
        rows.append(("Started", format_time(report.start)))
        rows.append(("Ended", format_time(report.end)))
        if report.start and report.end:
            rows.append(("Duration", format_duration((report.end - report.start).total_seconds())))
    lines = [
        f"### {icon} Deploy to {code(report.environment)}: {cell(result)}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
    ]
    return "\n".join(lines) + "\n"


def step_outputs(report: Report) -> dict[str, str]:
    """Outputs for the GitHub step (GITHUB_OUTPUT): the run's link becomes the environment's
    URL in the deployment view, and callers can branch on the result."""
    exit_code = Exit.COMPLETED if report.exit_code is None else report.exit_code
    result = "started" if report.started_only else exit_code.name.lower().replace("_", "-")
    return {
        "result": result,
        "exit-code": str(int(exit_code)),
        "flow-run-id": str(report.run_id or ""),
        "flow-run-url": report.run_url or "",
    }


def append_outputs(out: Output, path: Path, report: Report) -> None:
    # One name=value per line: a value with a line break could forge another output.
    lines = [f"{name}={one_line(value)}\n" for name, value in step_outputs(report).items()]
    _append(out, path, "".join(lines), "step outputs")


def append_summary(out: Output, path: Path, report: Report) -> None:
    _append(out, path, render_summary(report), "job summary")


def _append(out: Output, path: Path, text: str, what: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as file:
            file.write(out.redact(text))
    except OSError as exc:
        # The deploy's result matters more than its summary: report, but keep the exit code.
        out.line(f"bascule: warning: cannot write the {what} {path}: {exc}")
