"""``bascule trigger ENV --image REF``: start the deploy flow of one environment and follow it.

This is what the GitHub workflows run. It creates a flow run of the Prefect deployment
``deploy/ENV`` through the Prefect REST API (PREFECT_API_URL; PREFECT_API_KEY for Prefect Cloud
or PREFECT_API_AUTH_STRING for a self-hosted server with basic auth), with the parameters
``environment``, ``image`` and ``commit``, then prints the run's state changes and logs until
it ends and exits with a code that says how it ended.

The run is created with an idempotency key made of environment, commit and image: triggering
the same inputs again (a re-run job, a retry after a network error) follows the run that
already exists instead of deploying twice. ``--rerun LABEL`` adds a label to the key, for
deploying the same commit and image again on purpose (for example after a rollback).

A run paused at the approval gate waits for a person in the Prefect UI; that is not an error,
and the trigger keeps waiting until ``--timeout``.

Exit codes:

==== ====================================================================================
0    the flow run Completed: deployed
1    the flow run failed (Failed, Crashed or Cancelled)
2    usage or configuration error (bad argument or image reference, PREFECT_API_URL unset,
     credentials refused, no such deployment); nothing was started
3    rolled back: traffic was switched, the post-switch checks failed and traffic went back
     (state Failed, named RolledBack)
4    rejected at the approval gate (Failed, named Rejected); traffic did not move
5    the approval timed out (Failed, named TimedOut); traffic did not move
6    the trigger stopped waiting (``--timeout``) while the run goes on; its URL is printed
7    the Prefect API could not be reached, or stopped answering while the trigger waited
==== ====================================================================================

With GITHUB_STEP_SUMMARY set (or ``--summary PATH``) a markdown summary of the run is appended
to that file: environment, image, result, timings and a link to the run in the Prefect UI.
With GITHUB_OUTPUT set, the step gets the outputs ``result``, ``exit-code``, ``flow-run-id``
and ``flow-run-url``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import TextIO, TypeVar
from uuid import UUID

import httpx

from bascule.errors import UsageError
from bascule.images import parse_image
from bascule.prefect_api import (
    APIRequestError,
    APIUnreachable,
    FlowRun,
    LogEntry,
    PrefectAPI,
    StateView,
    flow_run_url,
    redact_url,
    ui_base_url,
)

DEPLOY_FLOW = "deploy"
DEFAULT_WAIT_TIMEOUT = 7200.0
DEFAULT_API_PATIENCE = 60.0


class Exit(IntEnum):
    COMPLETED = 0
    FAILED = 1
    USAGE = 2
    ROLLED_BACK = 3
    REJECTED = 4
    APPROVAL_TIMED_OUT = 5
    WAIT_TIMED_OUT = 6
    UNREACHABLE = 7


RESULTS: dict[Exit, str] = {
    Exit.COMPLETED: "deployed",
    Exit.FAILED: "failed",
    Exit.USAGE: "not started: usage or configuration error",
    Exit.ROLLED_BACK: "rolled back after the switch",
    Exit.REJECTED: "rejected at approval",
    Exit.APPROVAL_TIMED_OUT: "approval timed out",
    Exit.WAIT_TIMED_OUT: "still running when the trigger stopped waiting",
    Exit.UNREACHABLE: "Prefect API unreachable",
}

EPILOG = """\
exit codes:
  0  the flow run Completed: deployed
  1  the flow run failed (Failed, Crashed or Cancelled)
  2  usage or configuration error; nothing was started
  3  rolled back after the switch (Failed, named RolledBack)
  4  rejected at the approval gate (Failed, named Rejected)
  5  approval timed out (Failed, named TimedOut)
  6  --timeout expired while the run goes on (its URL is printed)
  7  the Prefect API could not be reached

environment:
  PREFECT_API_URL          the Prefect API, e.g. http://127.0.0.1:4200/api (required)
  PREFECT_API_KEY          bearer token (Prefect Cloud)
  PREFECT_API_AUTH_STRING  user:password for a self-hosted server with basic auth
  PREFECT_UI_URL           the UI, for links (default: the API URL without /api)
  GITHUB_STEP_SUMMARY      a job summary is appended to this file when set
  GITHUB_OUTPUT            step outputs result, exit-code, flow-run-id, flow-run-url
"""

# States in which a flow run has ended; Paused (waiting for approval) and the rest have not.
TERMINAL_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# The deploy flow names its failed final state to say why it did not deploy.
FAILED_STATE_NAMES: dict[str, Exit] = {
    "RolledBack": Exit.ROLLED_BACK,
    "Rejected": Exit.REJECTED,
    "TimedOut": Exit.APPROVAL_TIMED_OUT,
}


def exit_code_for_state(state_type: str, state_name: str | None) -> Exit | None:
    """The exit code for a flow run in this state, or None while the run has not ended."""
    state_type = state_type.upper()
    if state_type not in TERMINAL_TYPES:
        return None
    if state_type == "COMPLETED":
        return Exit.COMPLETED
    if state_type == "FAILED" and state_name in FAILED_STATE_NAMES:
        return FAILED_STATE_NAMES[state_name]
    return Exit.FAILED


# --- argument checks ------------------------------------------------------------------------


_ENVIRONMENT = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_COMMIT = re.compile(r"[0-9a-f]{7,64}", re.ASCII)
_RERUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def check_environment(name: str) -> str:
    if not _ENVIRONMENT.fullmatch(name):
        raise UsageError(
            f"environment {name!r} is not valid; expected a lowercase name such as "
            "dev, staging or production (letters, digits and '-')"
        )
    return name


def check_commit(commit: str | None) -> str | None:
    if commit is not None and not _COMMIT.fullmatch(commit):
        raise UsageError(
            f"commit {commit!r} is not valid; expected a lowercase hex commit SHA (7 to 64 digits)"
        )
    return commit


def check_rerun(label: str | None) -> str | None:
    if label is not None and not _RERUN.fullmatch(label):
        raise UsageError(
            f"--rerun {label!r} is not valid; use up to 64 letters, digits, '.', '_' or '-'"
        )
    return label


def idempotency_key(
    environment: str, commit: str | None, image: str, rerun: str | None = None
) -> str:
    """The same inputs give the same key, and Prefect returns the run it already has for it.

    Prefect scopes keys by flow, and every environment's deployment runs the one ``deploy``
    flow, so the environment is part of the key. A hash keeps the key short for long image
    references while the readable prefix helps whoever looks at the run.
    """
    material = json.dumps([environment, commit, image, rerun])
    digest = hashlib.sha256(material.encode()).hexdigest()[:32]
    return f"bascule-trigger/{environment}/{(commit or 'no-commit')[:12]}/{digest}"


# --- reporting --------------------------------------------------------------------------------


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


def format_log(entry: LogEntry) -> list[str]:
    """A log entry as output lines; continuation lines are indented, so no line of a message
    can pose as a line of ours (or as a GitHub workflow command, which must start a line)."""
    stamp = entry.timestamp.astimezone(UTC).strftime("%H:%M:%S")
    level = logging.getLevelName(entry.level)
    first, *rest = entry.message.splitlines() or [""]
    return [f"{stamp} {level:<8} {first}", *(f"{'':18}| {line}" for line in rest)]


def format_state(state: StateView) -> str:
    stamp = state.timestamp.astimezone(UTC).strftime("%H:%M:%S")
    line = f"{stamp} {'STATE':<8} {state.name or state.type.title()}"
    if state.message:
        line += f": {_one_line(state.message)}"
    return line


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _md_cell(text: str) -> str:
    # Table cells: one line, no column breaks, no HTML.
    flat = _one_line(text, 1000)
    return flat.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Report:
    """What the summary says; filled in as the trigger goes."""

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

    def take(self, run: FlowRun, url: str) -> None:
        self.run_id, self.run_name, self.run_url = run.id, run.name, url
        if run.state is not None:
            self.state = run.state.name or run.state.type.title()
            self.state_message = run.state.message
        self.created, self.start, self.end = run.created, run.start_time, run.end_time


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
    rows = [
        ("Environment", f"`{report.environment}`"),
        ("Image", f"`{_md_cell(report.image)}`"),
        ("Commit", f"`{report.commit}`" if report.commit else "-"),
        ("Result", _md_cell(result)),
    ]
    if report.state:
        state = report.state
        if report.state_message:
            state += f": {report.state_message}"
        rows.append(("Final state" if report.end else "State", _md_cell(state)))
    if report.error:
        rows.append(("Error", _md_cell(report.error)))
    if report.run_url:
        rows.append(("Flow run", f"[{_md_cell(report.run_name or 'run')}]({report.run_url})"))
        rows.append(("Created", format_time(report.created)))
        rows.append(("Started", format_time(report.start)))
        rows.append(("Ended", format_time(report.end)))
        if report.start and report.end:
            rows.append(("Duration", format_duration((report.end - report.start).total_seconds())))
    lines = [
        f"### {icon} Deploy to `{report.environment}`: {_md_cell(result)}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
    ]
    return "\n".join(lines) + "\n"


class Output:
    """Writes lines, with every known secret replaced by ``***`` as a last line of defence
    (a flow that logs a credential must not put it into a public CI log)."""

    def __init__(self, stream: TextIO, secret_values: Iterable[str | None]) -> None:
        self.stream = stream
        self.last_write = time.monotonic()
        found: set[str] = set()
        for value in secret_values:
            if not value:
                continue
            found.add(value)
            found.add(base64.b64encode(value.encode()).decode())
            _, colon, password = value.partition(":")
            if colon and len(password) >= 4:
                found.add(password)
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(found, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def line(self, text: str = "") -> None:
        self.stream.write(self.redact(text) + "\n")
        self.stream.flush()
        self.last_write = time.monotonic()


# --- the trigger ------------------------------------------------------------------------------

T = TypeVar("T")


class _Stop(Exception):
    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Watch:
    """What has been printed so far of one flow run."""

    run_id: UUID
    states_seen: set[UUID] = field(default_factory=set)
    logs_seen: set[UUID] = field(default_factory=set)
    newest_log: datetime | None = None


# Logs reach the API in batches and not always in timestamp order; asking again for a window
# before the newest seen (and skipping ids already printed) catches the late ones.
LOG_LOOKBACK = timedelta(seconds=30)
HEARTBEAT_SECONDS = 300.0


def trigger(
    env: str,
    image: str,
    commit: str | None,
    *,
    api_url: str | None,
    wait_timeout: float | None,
    out: TextIO = sys.stdout,
    summary_path: Path | None = None,
    outputs_path: Path | None = None,
    api_key: str | None = None,
    auth_string: str | None = None,
    ui_url: str | None = None,
    wait: bool = True,
    require_digest: bool = False,
    rerun: str | None = None,
    check_only: bool = False,
    github_actions: bool = False,
    poll_interval: float = 2.0,
    api_patience: float = DEFAULT_API_PATIENCE,
    log_settle: float = 3.0,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Starts (or finds) the deploy run for ``env`` and follows it; returns the exit code.

    ``wait_timeout``: seconds to follow the run (None or 0: no limit). ``api_patience``: how
    long the API may fail to answer before giving up with exit 7. ``check_only`` validates
    the arguments and looks the deployment up without starting anything.
    """
    output = Output(out, [api_key, auth_string])
    report = Report(environment=env, image=image, commit=commit)
    job = _Trigger(output, report, poll_interval, api_patience, log_settle)
    try:
        check_environment(env)
        parse_image(image, require_digest=require_digest)
        check_commit(commit)
        check_rerun(rerun)
        if not api_url:
            raise UsageError(
                "PREFECT_API_URL is not set; set it to the Prefect API, "
                "e.g. http://127.0.0.1:4200/api"
            )
        ui_base = ui_base_url(api_url, ui_url)
        with PrefectAPI(
            api_url, api_key=api_key, auth_string=auth_string, transport=transport
        ) as api:
            job.api, job.ui_base = api, ui_base
            code = job.run(
                env,
                image,
                commit,
                rerun=rerun,
                wait=wait,
                check_only=check_only,
                wait_timeout=wait_timeout or None,
                github_actions=github_actions,
            )
    except UsageError as exc:
        output.line(f"bascule trigger: error: {exc}")
        code = Exit.USAGE
        report.error = str(exc)
    except _Stop as exc:
        output.line(f"bascule trigger: error: {exc}")
        code = exc.code
        report.error = str(exc)
    report.exit_code = code
    if summary_path is not None and not check_only:
        _append_summary(output, summary_path, report)
    if outputs_path is not None and not check_only:
        _append_outputs(output, outputs_path, report)
    return int(code)


class _Trigger:
    api: PrefectAPI
    ui_base: str

    def __init__(
        self,
        output: Output,
        report: Report,
        poll_interval: float,
        api_patience: float,
        log_settle: float,
    ) -> None:
        self.out = output
        self.report = report
        self.poll_interval = poll_interval
        self.api_patience = api_patience
        self.log_settle = log_settle

    def run(
        self,
        env: str,
        image: str,
        commit: str | None,
        *,
        rerun: str | None,
        wait: bool,
        check_only: bool,
        wait_timeout: float | None,
        github_actions: bool,
    ) -> Exit:
        where = redact_url(self.api.api_url)
        deployment = self._setup_call(
            lambda: self.api.read_deployment_by_name(DEPLOY_FLOW, env),
            not_found=(
                f"there is no deployment {DEPLOY_FLOW}/{env} on the Prefect server at {where}; "
                "create it first (prefect deploy, see prefect.yaml)"
            ),
        )
        key = idempotency_key(env, commit, image, rerun)
        parameters = {"environment": env, "image": image, "commit": commit}
        if check_only:
            self.out.line(f"bascule: deployment {DEPLOY_FLOW}/{env} ({deployment.id}) at {where}")
            self.out.line(f"bascule: would start it with {json.dumps(parameters)}, key {key}")
            return Exit.COMPLETED
        flow_run, created = self._setup_call(
            # Safe to retry: the idempotency key makes a repeated create return the same run.
            lambda: self.api.create_flow_run_from_deployment(
                deployment.id, parameters=parameters, idempotency_key=key
            ),
            not_found=f"deployment {DEPLOY_FLOW}/{env} disappeared while starting it",
        )
        url = flow_run_url(self.ui_base, flow_run.id)
        self.report.take(flow_run, url)
        if created:
            self.out.line(
                f"bascule: started flow run {flow_run.name} ({flow_run.id}) of {DEPLOY_FLOW}/{env}"
            )
        else:
            self.out.line(
                f"bascule: a flow run for this environment, commit and image exists already: "
                f"{flow_run.name} ({flow_run.id}); following it (--rerun LABEL starts another)"
            )
        self.out.line(f"bascule: image {image}, commit {commit or '-'}")
        self.out.line(f"bascule: watch it at {url}")
        if not wait:
            self.report.started_only = True
            return Exit.COMPLETED

        # Lines from the run (logs) could hold GitHub workflow commands; stop-commands makes
        # the runner ignore them until the random token is printed again.
        token = secrets.token_hex(16) if github_actions else None
        if token:
            self.out.line(f"::stop-commands::{token}")
        try:
            code = self._follow(flow_run.id, url, wait_timeout)
        finally:
            if token:
                self.out.line(f"::{token}::")
        if github_actions and code != Exit.COMPLETED:
            self.out.line(f"::error title=Deploy to {env}::{RESULTS[code]}: {url}")
        return code

    def _setup_call(self, call: Callable[[], T], *, not_found: str) -> T:
        """A call made before the run is followed: config errors are usage errors (2)."""
        try:
            return self._retrying(call)
        except APIRequestError as exc:
            if exc.status_code in (401, 403):
                raise UsageError(
                    f"the Prefect API refused the credentials (HTTP {exc.status_code}); "
                    "check PREFECT_API_KEY or PREFECT_API_AUTH_STRING"
                ) from None
            if exc.status_code == 404:
                raise UsageError(not_found) from None
            raise UsageError(str(exc)) from None

    def _retrying(self, call: Callable[[], T]) -> T:
        give_up = time.monotonic() + self.api_patience
        warned = False
        while True:
            try:
                return call()
            except APIUnreachable as exc:
                if time.monotonic() >= give_up:
                    raise _Stop(
                        Exit.UNREACHABLE,
                        f"cannot reach the Prefect API (gave up after {self.api_patience:.0f}s):"
                        f" {exc}",
                    ) from None
                if not warned:
                    self.out.line(f"bascule: Prefect API not answering ({exc}); retrying")
                    warned = True
                time.sleep(self.poll_interval)

    def _follow(self, run_id: UUID, url: str, wait_timeout: float | None) -> Exit:
        watch = _Watch(run_id)
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        while True:
            try:
                run, news = self._retrying(lambda: self._poll(watch))
            except APIRequestError as exc:
                raise _Stop(Exit.UNREACHABLE, f"lost the flow run {url}: {exc}") from None
            except _Stop as exc:
                raise _Stop(exc.code, f"{exc}; the run may still go on: {url}") from None
            self._show(watch, news)
            self.report.take(run, url)
            code = exit_code_for_state(run.state.type, run.state.name) if run.state else None
            if code is not None:
                self._settle_logs(watch)
                self.out.line(
                    f"bascule: flow run ended {self.report.state}{_took(run)}: "
                    f"{RESULTS[code]} (exit {int(code)})"
                )
                return code
            if deadline is not None and time.monotonic() >= deadline:
                self.out.line(
                    f"bascule: stopped waiting after {wait_timeout:.0f}s; the run is still "
                    f"{self.report.state} and goes on: {url}"
                )
                return Exit.WAIT_TIMED_OUT
            if time.monotonic() - self.out.last_write >= HEARTBEAT_SECONDS:
                self.out.line(f"bascule: still {self.report.state}: {url}")
            time.sleep(self.poll_interval)

    def _poll(self, watch: _Watch) -> tuple[FlowRun, list[StateView | LogEntry]]:
        """The run and what happened to it since the last poll, oldest first. Reads only:
        when a call fails halfway, the whole poll can be repeated without losing anything."""
        run = self.api.read_flow_run(watch.run_id)
        news: list[StateView | LogEntry] = []
        if run.state is not None and run.state.id not in watch.states_seen:
            # The history, not only the current state: a short state between polls still shows.
            states = self.api.read_flow_run_states(watch.run_id)
            news.extend(state for state in states if state.id not in watch.states_seen)
        news.extend(self._new_logs(watch))
        news.sort(key=lambda item: item.timestamp)
        return run, news

    def _new_logs(self, watch: _Watch) -> list[LogEntry]:
        after = None if watch.newest_log is None else watch.newest_log - LOG_LOOKBACK
        found: list[LogEntry] = []
        offset, limit = 0, 200
        while True:
            batch = self.api.read_logs(watch.run_id, after=after, offset=offset, limit=limit)
            found.extend(entry for entry in batch if entry.id not in watch.logs_seen)
            if len(batch) < limit:
                return found
            offset += limit

    def _show(self, watch: _Watch, news: list[StateView | LogEntry]) -> None:
        for item in news:
            if isinstance(item, LogEntry):
                if item.id in watch.logs_seen:
                    continue
                watch.logs_seen.add(item.id)
                if watch.newest_log is None or item.timestamp > watch.newest_log:
                    watch.newest_log = item.timestamp
                for line in format_log(item):
                    self.out.line(line)
                continue
            if item.id in watch.states_seen:
                continue
            watch.states_seen.add(item.id)
            self.out.line(format_state(item))
            if item.type == "PAUSED":
                self.out.line(
                    "bascule: paused, waiting for approval in the Prefect UI "
                    f"(not an error): {flow_run_url(self.ui_base, watch.run_id)}"
                )

    def _settle_logs(self, watch: _Watch) -> None:
        """The last logs of a run arrive after its final state; give them a moment."""
        until = time.monotonic() + self.log_settle
        while time.monotonic() < until:
            time.sleep(min(1.0, self.log_settle))
            try:
                self._show(watch, list(self._new_logs(watch)))
            except (APIUnreachable, APIRequestError):
                return


def _took(run: FlowRun) -> str:
    if run.start_time is None or run.end_time is None:
        return ""
    return f" after {format_duration((run.end_time - run.start_time).total_seconds())}"


def step_outputs(report: Report) -> dict[str, str]:
    """Outputs for the GitHub step (GITHUB_OUTPUT): the run's link becomes the environment's
    URL in the deployment view, and callers can branch on the result."""
    code = Exit.COMPLETED if report.exit_code is None else report.exit_code
    result = "started" if report.started_only else code.name.lower().replace("_", "-")
    return {
        "result": result,
        "exit-code": str(int(code)),
        "flow-run-id": str(report.run_id or ""),
        "flow-run-url": report.run_url or "",
    }


def _append_outputs(output: Output, path: Path, report: Report) -> None:
    # One name=value per line: a value with a line break could forge another output.
    lines = [f"{name}={_one_line(value)}\n" for name, value in step_outputs(report).items()]
    try:
        with path.open("a", encoding="utf-8") as outputs:
            outputs.write(output.redact("".join(lines)))
    except OSError as exc:
        output.line(f"bascule trigger: warning: cannot write the step outputs {path}: {exc}")


def _append_summary(output: Output, path: Path, report: Report) -> None:
    try:
        with path.open("a", encoding="utf-8") as summary:
            summary.write(output.redact(render_summary(report)))
    except OSError as exc:
        # The deploy's result matters more than its summary: report, but keep the exit code.
        output.line(f"bascule trigger: warning: cannot write the job summary {path}: {exc}")


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``bascule trigger``; also sets the help epilog listing exit codes."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("environment", metavar="ENV", help="environment: dev, staging, production")
    parser.add_argument(
        "--image",
        required=True,
        metavar="REF",
        help="image reference to deploy, e.g. registry.example/app@sha256:<hex>",
    )
    parser.add_argument(
        "--commit", metavar="SHA", help="commit being deployed; part of the idempotency key"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="stop waiting after this long (exit 6; the run goes on); "
        "0: no limit (default: %(default).0f)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start the run, print its URL and exit 0 without following it",
    )
    parser.add_argument(
        "--require-digest",
        action="store_true",
        help="refuse an image reference without @sha256:<digest>",
    )
    parser.add_argument(
        "--rerun",
        metavar="LABEL",
        help="deploy the same commit and image again: a new label gives a new "
        "run, the same label the same run",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the arguments and find the deployment; start nothing",
    )
    parser.add_argument(
        "--api-patience",
        type=float,
        default=DEFAULT_API_PATIENCE,
        metavar="SECONDS",
        help="how long the Prefect API may not answer before giving up with exit 7 "
        "(default: %(default).0f)",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="PATH",
        help="append a markdown summary here (default: $GITHUB_STEP_SUMMARY)",
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``trigger`` to a ``bascule`` subcommand table."""
    parser = subparsers.add_parser(
        "trigger",
        help="start the deploy flow run of an environment and follow it",
        description="Start the deploy flow run of an environment and follow it to its end.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    """Runs ``bascule trigger`` with parsed arguments; settings come from the environment."""
    env = os.environ if environ is None else environ
    summary: Path | None = args.summary
    if summary is None and env.get("GITHUB_STEP_SUMMARY"):
        summary = Path(env["GITHUB_STEP_SUMMARY"])
    if args.timeout < 0 or args.api_patience < 0:
        print("bascule trigger: error: --timeout and --api-patience must be 0 or more seconds")
        return int(Exit.USAGE)
    return trigger(
        args.environment,
        args.image,
        args.commit,
        api_url=env.get("PREFECT_API_URL") or None,
        api_key=env.get("PREFECT_API_KEY") or None,
        auth_string=env.get("PREFECT_API_AUTH_STRING") or None,
        ui_url=env.get("PREFECT_UI_URL") or None,
        wait_timeout=args.timeout,
        summary_path=summary,
        outputs_path=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
        wait=not args.no_wait,
        require_digest=args.require_digest,
        rerun=args.rerun,
        check_only=args.check,
        github_actions=env.get("GITHUB_ACTIONS") == "true",
        api_patience=args.api_patience,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bascule.trigger``: the command without the rest of the ``bascule`` CLI."""
    parser = argparse.ArgumentParser(
        prog="bascule trigger",
        description="Start the deploy flow run of an environment and follow it to its end.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
