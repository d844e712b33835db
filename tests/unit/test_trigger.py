"""Unit tests of ``bascule trigger``: the pure decisions, and the command against a scripted fake
of the Prefect API (httpx.MockTransport). The real-server tests are in
tests/integration/test_trigger.py."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import yaml
from prefect.client.schemas.objects import Log
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_KEY,
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    temporary_settings,
)

from bascule import jobpolicy, runpolicy
from bascule import trigger as tr
from bascule.config import check_environment_name
from bascule.errors import UsageError
from bascule.outcome import RESULTS, TERMINAL_TYPES, Exit, error_line
from bascule.prefect_client import ApiSettings, flow_run_url, redact_url, ui_base_url
from bascule.promotion import DIGEST_LABEL
from bascule.trigger import follow, github, options
from bascule.trigger.report import Report, format_duration
from bascule.trigger.start import trigger
from tests.support.envs import REPO, copy_deployments

DIGEST = "sha256:" + "ab" * 32
API = "http://127.0.0.1:4200/api"
SECRET = "ci-user:s3cret-auth-string-9f"


def test_every_exit_has_a_result_phrase() -> None:
    assert set(RESULTS) == set(Exit)


@pytest.mark.parametrize("name", ["dev", "staging", "production", "eu-west-1"])
def test_valid_environments(name: str) -> None:
    assert check_environment_name(name) == name


@pytest.mark.parametrize("name", ["", "Prod", "../dev", "dev/x", "-dev", "dev-", "a" * 64])
def test_invalid_environments(name: str) -> None:
    with pytest.raises(UsageError, match="environment"):
        check_environment_name(name)


def test_commit_and_rerun_checks() -> None:
    assert options.check_commit(None) is None
    assert options.check_commit("abc1234") == "abc1234"
    assert options.check_commit("a" * 40) == "a" * 40
    for bad in ("abc", "ABCDEF1", "main", "g" * 40):
        with pytest.raises(UsageError, match="commit"):
            options.check_commit(bad)
    assert options.check_rerun("after-fix.2") == "after-fix.2"
    with pytest.raises(UsageError, match="--rerun"):
        options.check_rerun("a b")


# --- idempotency key ----------------------------------------------------------------------------


def test_idempotency_key_is_stable_and_depends_on_every_input() -> None:
    key = options.idempotency_key("staging", "a" * 40, "app:1")
    assert key == options.idempotency_key("staging", "a" * 40, "app:1")
    assert key.startswith("bascule-trigger/staging/aaaaaaaaaaaa/")
    others = {
        options.idempotency_key("production", "a" * 40, "app:1"),
        options.idempotency_key("staging", "b" * 40, "app:1"),
        options.idempotency_key("staging", "a" * 40, "app:2"),
        options.idempotency_key("staging", "a" * 40, "app:1", "again"),
        options.idempotency_key("staging", None, "app:1"),
    }
    assert key not in others
    assert len(others) == 5


# --- URLs, credentials, output ------------------------------------------------------------------


def test_ui_urls() -> None:
    assert ui_base_url("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200"
    assert ui_base_url("http://127.0.0.1:4200/api/") == "http://127.0.0.1:4200"
    assert ui_base_url(API, "https://prefect.example/") == "https://prefect.example"
    assert ui_base_url("https://u:pw@prefect.example/api") == "https://prefect.example"
    assert (
        ui_base_url("https://api.prefect.cloud/api/accounts/A1/workspaces/W2")
        == "https://app.prefect.cloud/account/A1/workspace/W2"
    )
    run = UUID(int=1)
    assert flow_run_url("http://x", run) == f"http://x/runs/flow-run/{run}"
    assert redact_url("https://user:pw@host:8443/api") == "https://host:8443/api"


def test_output_redacts_secrets_their_password_and_base64() -> None:
    stream = io.StringIO()
    out = github.Output(stream, [SECRET, None, "pnu_apikey123"])
    password = SECRET.split(":", 1)[1]
    encoded = base64.b64encode(SECRET.encode()).decode()
    out.line(f"a {SECRET} b {password} c {encoded} d pnu_apikey123")
    assert stream.getvalue() == "a *** b *** c *** d ***\n"


def test_multiline_log_messages_cannot_start_a_line() -> None:
    entry = Log(
        id=uuid4(),
        name="prefect.flow_runs",
        level=30,
        message="first\n::error::injected\n##[warning]x",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    lines = follow.format_log(entry)
    assert lines[0] == "03:04:05 WARNING  first"
    assert all(line.startswith(" ") for line in lines[1:])


def test_durations() -> None:
    assert format_duration(0.4) == "0s"
    assert format_duration(61) == "1m 01s"
    assert format_duration(3 * 3600 + 5) == "3h 00m 05s"


def test_summary_escapes_what_the_run_says() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    report = Report(
        environment="staging",
        image=f"registry.example/app@{DIGEST}",
        commit="abc1234",
        exit_code=Exit.ROLLED_BACK,
        run_name="brave-fox",
        run_url="http://ui/runs/flow-run/1",
        state="RolledBack",
        state_message="error rate 7% | p99 <b>2s</b>\nsecond line",
        created=start - timedelta(seconds=3),
        start=start,
        end=start + timedelta(seconds=75),
    )
    assert github.render_summary(report).count("| Digest | - |") == 1  # none recorded
    report.digest = DIGEST
    text = github.render_summary(report)
    assert text.startswith("### ↩️ Deploy to `staging`: rolled back after the switch (exit 3)\n")
    assert "| Image | `registry.example/app@sha256:" in text
    assert f"| Digest | `{DIGEST}` |" in text
    assert (
        "| Final state | RolledBack: error rate 7% \\| p99 &lt;b&gt;2s&lt;/b&gt; second line |"
        in text
    )
    assert "| Flow run | [brave-fox](http://ui/runs/flow-run/1) |" in text
    assert "| Created | 2026-01-02 03:04:02 UTC |" in text
    assert "| Duration | 1m 15s |" in text


# --- the command against a fake API -------------------------------------------------------------
# Prefect's own client talks to it (through httpx_settings' transport): what is tested is the
# trigger's following and reporting, fast and with failures a real server cannot be made to
# produce on cue. tests/integration/test_trigger.py runs the same command against a real server.


class FakePrefect:
    """Answers the calls the trigger makes; the run walks through ``states``, one per read."""

    def __init__(
        self,
        states: list[tuple[str, str]],
        *,
        existing: bool = False,
        deployment: str = "deploy/staging",
    ) -> None:
        self.deployment = deployment  # the one deployment the server has
        self.deployment_id = uuid4()
        self.flow_id = uuid4()
        self.run_id = uuid4()
        self.states = states
        self.reads = 0
        self.existing = existing
        self.requests: list[httpx.Request] = []
        self.created_body: dict[str, Any] | None = None
        self.fail_next: list[int | type[httpx.TransportError]] = []
        self.t0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
        self.history: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.labels: dict[str, str] = {}

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _state(self, index: int) -> dict[str, Any]:
        state_type, name = self.states[index]
        return {
            "id": str(UUID(int=index + 1)),
            "type": state_type,
            "name": name,
            "message": f"message of {name}",
            "timestamp": (self.t0 + timedelta(seconds=10 * index)).isoformat(),
        }

    def _run(self) -> dict[str, Any]:
        index = min(self.reads, len(self.states) - 1)
        state = self._state(index)
        if not self.history or self.history[-1]["id"] != state["id"]:
            self.history.append(state)
            self.logs.append(
                {
                    "id": str(uuid4()),
                    "name": "prefect.flow_runs",
                    "level": 20,
                    "message": f"log at {state['name']}",
                    "timestamp": state["timestamp"],
                    "flow_run_id": str(self.run_id),
                }
            )
        ended = state["type"] in TERMINAL_TYPES
        return {
            "id": str(self.run_id),
            "name": "brave-fox",
            "flow_id": str(self.flow_id),
            "deployment_id": str(self.deployment_id),
            "state": state,
            "created": self.t0.isoformat(),
            "start_time": (self.t0 + timedelta(seconds=5)).isoformat(),
            "end_time": state["timestamp"] if ended else None,
            "labels": self.labels,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if isinstance(failure, int):
                # Retry-After: 0 keeps Prefect's own retries of a 503 instant.
                headers = {"Retry-After": "0"}
                return httpx.Response(failure, json={"detail": "scripted"}, headers=headers)
            raise failure("scripted", request=request)
        path = request.url.path.removeprefix("/api/")
        if request.method == "GET" and path == f"deployments/name/{self.deployment}":
            deployment = {
                "id": str(self.deployment_id),
                "name": self.deployment.split("/")[1],
                "flow_id": str(self.flow_id),
            }
            return httpx.Response(200, json=deployment)
        if path == f"deployments/{self.deployment_id}/create_flow_run":
            self.created_body = json.loads(request.content)
            return httpx.Response(200 if self.existing else 201, json=self._run())
        if path == f"flow_runs/{self.run_id}":
            self.reads += 1
            return httpx.Response(200, json=self._run())
        if path == "flow_run_states/":
            return httpx.Response(200, json=list(reversed(self.history)))
        if path == "logs/filter":
            return httpx.Response(200, json=self.logs)
        # Also the CSRF token endpoint: a 404 tells Prefect's client the server has none.
        return httpx.Response(404, json={"detail": f"unexpected {request.method} {path}"})


def run_fake(
    fake: FakePrefect,
    tmp_path: Path,
    transport: httpx.BaseTransport | None = None,
    **kwargs: Any,
) -> tuple[int, str, str]:
    out = io.StringIO()
    summary = tmp_path / "summary.md"
    settings: dict[str, Any] = {
        "environment": "staging",
        "image": f"registry.example/app@{DIGEST}",
        "commit": "abc1234",
        "api": ApiSettings(url=API, auth_string=SECRET),
        "wait_timeout": 30.0,
        "summary_path": summary,
        "poll_interval": 0.0,
        "log_settle": 0.0,
        "api_patience": 0.2,
    }
    settings.update(kwargs)
    code = trigger(options.Options(**settings), out, transport or fake.transport())
    return code, out.getvalue(), summary.read_text() if summary.exists() else ""


SCHEDULED = ("SCHEDULED", "Scheduled")
RUNNING = ("RUNNING", "Running")


@pytest.mark.parametrize(
    ("final", "code"),
    [
        (("COMPLETED", "Completed"), Exit.COMPLETED),
        (("FAILED", "Failed"), Exit.FAILED),
        (("FAILED", "RolledBack"), Exit.ROLLED_BACK),
        (("FAILED", "Rejected"), Exit.REJECTED),
        (("FAILED", "ApprovalTimedOut"), Exit.APPROVAL_TIMED_OUT),
        (("FAILED", "LockHeld"), Exit.USAGE),
        (("FAILED", "TimedOut"), Exit.FAILED),  # Prefect's own timeouts are no approval's
        (("CRASHED", "Crashed"), Exit.FAILED),
        (("CANCELLED", "Cancelled"), Exit.INTERRUPTED),
    ],
)
def test_follows_the_run_to_its_exit_code(
    tmp_path: Path, final: tuple[str, str], code: Exit
) -> None:
    fake = FakePrefect([SCHEDULED, RUNNING, ("PAUSED", "Paused"), RUNNING, final])
    result, output, summary = run_fake(fake, tmp_path)
    assert result == code
    lines = output.splitlines()
    # Every state once, in order, each with the log written at it.
    states = [line.split()[2].rstrip(":") for line in lines if " STATE " in line]
    assert states == ["Scheduled", "Running", "Paused", "Running", final[1]]
    assert sum(" INFO     log at " in line for line in lines) == 5
    assert any("waiting for approval in the Prefect UI (not an error)" in line for line in lines)
    assert lines[-1].startswith(f"bascule: flow run ended {final[1]} after ")
    assert lines[-1].endswith(f"{RESULTS[code]} (exit {int(code)})")
    assert f"(exit {int(code)})" in summary.splitlines()[0]
    assert SECRET.split(":")[1] not in output + summary


def test_summary_names_the_digest_the_run_labelled(tmp_path: Path) -> None:
    fake = FakePrefect([RUNNING, ("COMPLETED", "Completed")])
    ran = "sha256:" + "cd" * 32
    fake.labels = {DIGEST_LABEL: ran}
    code, _, summary = run_fake(fake, tmp_path)
    assert code == Exit.COMPLETED
    assert f"| Digest | `{ran}` |" in summary


def test_creates_the_run_with_parameters_key_and_basic_auth(tmp_path: Path) -> None:
    fake = FakePrefect([("COMPLETED", "Completed")])
    code, output, _ = run_fake(fake, tmp_path)
    assert code == Exit.COMPLETED
    assert "bascule: started flow run brave-fox" in output
    assert fake.created_body is not None
    assert fake.created_body["parameters"] == {
        "environment": "staging",
        "image": f"registry.example/app@{DIGEST}",
        "commit": "abc1234",
    }
    assert fake.created_body["idempotency_key"] == options.idempotency_key(
        "staging", "abc1234", f"registry.example/app@{DIGEST}"
    )
    # The commit is a parameter only: the worker clones at it; job variables are refused.
    assert not fake.created_body.get("job_variables")
    expected = "Basic " + base64.b64encode(SECRET.encode()).decode()
    assert {r.headers["Authorization"] for r in fake.requests} == {expected}


def test_prefect_yaml_leaves_what_runs_to_the_environments_workers() -> None:
    """What the workers would refuse is not in the shipped deployments: pull steps, job
    variables, another entrypoint, another environment's pool."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert spec["pull"] == []
    for dep in spec["deployments"]:
        environment = dep["parameters"]["environment"]
        if dep["work_pool"]["name"] == runpolicy.kubernetes_pool_name(environment):
            # Its code is in the flow image, at the commit: the one step its worker accepts.
            assert dep["pull"] == jobpolicy.IN_IMAGE_PULL_STEPS, dep
            assert "job_variables" not in dep["work_pool"], dep
            flow = dep["entrypoint"].rsplit(":", 1)[1]
            assert dep["entrypoint"] == runpolicy.ENTRYPOINTS[flow], dep
            continue
        assert dep["work_pool"]["name"] == runpolicy.pool_name(environment), dep
        assert "pull" not in dep and "job_variables" not in dep["work_pool"], dep
        flow = dep["entrypoint"].rsplit(":", 1)[1]
        assert dep["entrypoint"] == runpolicy.ENTRYPOINTS[flow], dep


def test_without_a_commit_the_run_gets_no_commit_to_clone(tmp_path: Path) -> None:
    fake = FakePrefect([("COMPLETED", "Completed")])
    run_fake(fake, tmp_path, commit=None)
    assert fake.created_body is not None
    assert fake.created_body["parameters"]["commit"] is None
    assert not fake.created_body.get("job_variables")


def test_api_key_is_sent_as_bearer_token(tmp_path: Path) -> None:
    fake = FakePrefect([("COMPLETED", "Completed")])
    run_fake(fake, tmp_path, api=ApiSettings(url=API, key="pnu_key"))
    assert {r.headers["Authorization"] for r in fake.requests} == {"Bearer pnu_key"}


def test_existing_run_is_followed_not_duplicated(tmp_path: Path) -> None:
    fake = FakePrefect([("COMPLETED", "Completed")], existing=True)
    code, output, _ = run_fake(fake, tmp_path)
    assert code == Exit.COMPLETED
    assert "exists already" in output
    assert "--rerun LABEL starts another" in output


def test_paused_run_until_the_wait_timeout(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED, ("PAUSED", "Paused")])
    code, output, summary = run_fake(fake, tmp_path, wait_timeout=0.05, poll_interval=0.01)
    assert code == Exit.WAIT_TIMED_OUT
    assert (
        f"the run is still Paused and goes on: http://127.0.0.1:4200/runs/flow-run/{fake.run_id}"
        in output
    )
    assert "still running when the trigger stopped waiting (exit 6)" in summary
    assert "| State | Paused: message of Paused |" in summary
    assert "| Ended | - |" in summary


def test_no_wait_starts_and_returns(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED])
    code, output, summary = run_fake(fake, tmp_path, wait=False)
    assert code == Exit.COMPLETED
    assert fake.reads == 0
    assert f"watch it at http://127.0.0.1:4200/runs/flow-run/{fake.run_id}" in output
    assert "started (not waited for)" in summary


def test_check_only_starts_nothing_and_writes_no_summary(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED])
    code, output, summary = run_fake(fake, tmp_path, check_only=True)
    assert code == Exit.COMPLETED
    assert fake.created_body is None
    assert "deployment deploy/staging" in output
    assert summary == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": "registry.example/app:1", "require_digest": True}, "has no digest"),
        ({"image": "app:latest"}, "latest"),
        ({"image": "app"}, "no tag"),
        ({"api": ApiSettings(url=None)}, "PREFECT_API_URL is not set"),
        ({"wait_timeout": -1.0}, "--timeout must be 0 or more seconds"),
    ],
)
def test_usage_errors_call_nothing(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    fake = FakePrefect([SCHEDULED])
    code, output, summary = run_fake(fake, tmp_path, **changes)
    assert code == Exit.USAGE
    assert message in output
    assert f"{RESULTS[Exit.USAGE]} (exit 2)" in summary
    assert fake.requests == []


def test_unknown_deployment_is_a_config_error(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED])
    code, output, _ = run_fake(fake, tmp_path, environment="qa")
    assert code == Exit.USAGE
    assert (
        error_line("there is no deployment deploy/qa on the Prefect server at ")
        + "http://127.0.0.1:4200/api"
        in output
    )


# --- another deployment than deploy/ENV -----------------------------------------------------------

OTHER = "deploy/staging-kubernetes"


def test_another_deployment_is_started_under_a_key_of_its_own(tmp_path: Path) -> None:
    fake = FakePrefect([("COMPLETED", "Completed")], deployment=OTHER)
    code, output, _ = run_fake(fake, tmp_path, deployment=OTHER)
    assert code == Exit.COMPLETED, output
    assert f"bascule: started flow run brave-fox ({fake.run_id}) of {OTHER}" in output
    assert fake.created_body is not None
    # The same flow's deploy/staging run of these inputs is not this one.
    default = options.idempotency_key("staging", "abc1234", f"registry.example/app@{DIGEST}")
    assert fake.created_body["idempotency_key"] != default
    assert fake.created_body["parameters"]["environment"] == "staging"
    # Naming the default deployment is not naming another: the key stays the one it was.
    named = options.Options("staging", "app:1", ApiSettings(API), deployment="deploy/staging")
    assert (
        named.idempotency_key
        == options.Options("staging", "app:1", ApiSettings(API)).idempotency_key
    )
    # Without the option, deploy/staging is asked for, which this server does not have.
    code, output, _ = run_fake(FakePrefect([SCHEDULED], deployment=OTHER), tmp_path)
    assert code == Exit.USAGE
    assert "there is no deployment deploy/staging on the Prefect server" in output


@pytest.mark.parametrize(
    "name",
    [
        "deploy",
        "deploy/",
        "/staging",
        "deploy/staging/x",
        "deploy/st%ging",
        " deploy/staging",
        "deploy/staging ",
        "deploy/<x>",
        "deploy/a&b",
        "deploy/a\nb",
    ],
)
def test_a_deployment_that_is_not_flow_slash_name_calls_nothing(tmp_path: Path, name: str) -> None:
    fake = FakePrefect([SCHEDULED], deployment=name)
    code, output, _ = run_fake(fake, tmp_path, deployment=name)
    assert code == Exit.USAGE
    assert output.startswith(error_line(f"--deployment {name!r} is not a Prefect deployment name"))
    assert "give FLOW/NAME, e.g. deploy/staging" in output
    assert fake.requests == []


@pytest.mark.parametrize("name", ["deploy/staging-kubernetes", "my flow/eu west 1", "x/y"])
def test_prefect_deployment_names_pass(name: str) -> None:
    assert options.check_deployment(name) == name


def test_refused_credentials_are_a_config_error_and_not_printed(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED])
    fake.fail_next = [401]
    code, output, summary = run_fake(fake, tmp_path)
    assert code == Exit.USAGE
    assert "refused the credentials (HTTP 401)" in output
    for text in (output, summary):
        assert SECRET not in text
        assert SECRET.split(":")[1] not in text


def test_transient_failures_are_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePrefect([RUNNING, ("COMPLETED", "Completed")])
    # The start's client retries the 503 and the 429 itself, as Prefect's would; the refused
    # connection before any answer is Bascule's to retry.
    fake.fail_next = [503, 429, httpx.ConnectError]
    with caplog.at_level(logging.DEBUG, logger="bascule"):
        code, output, _ = run_fake(fake, tmp_path, api_patience=5.0)
    assert code == Exit.COMPLETED
    assert output.count("Prefect API not answering") == 1
    assert fake.fail_next == []
    records = [r for r in caplog.records if "retries=" in r.message]
    counts = [(r.name, r.getMessage().rsplit("=", 1)[1]) for r in records]
    # The 503 and the 429, when starting; the refused connection is not one. Following: none.
    assert counts == [("bascule.start_run", "2"), ("bascule.prefect_client", "0")], counts


def test_unreachable_api(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED])
    fake.fail_next = [httpx.ConnectError] * 10_000
    code, output, summary = run_fake(fake, tmp_path, poll_interval=0.01)
    assert code == Exit.UNREACHABLE
    assert "cannot reach the Prefect API" in output
    assert f"{RESULTS[Exit.UNREACHABLE]} (exit 7)" in summary


def test_api_lost_while_waiting_gives_the_run_url(tmp_path: Path) -> None:
    fake = FakePrefect([SCHEDULED, RUNNING])

    def failing(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(f"flow_runs/{fake.run_id}") and fake.reads >= 1:
            raise httpx.ReadTimeout("scripted", request=request)
        return fake.handle(request)

    # Prefect's client would retry the time-out 5 times over a minute; its setting says how often.
    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
        code, output, _ = run_fake(
            fake, tmp_path, transport=httpx.MockTransport(failing), poll_interval=0.01
        )
    assert code == Exit.UNREACHABLE
    assert f"the run may still go on: http://127.0.0.1:4200/runs/flow-run/{fake.run_id}" in output


def test_github_actions_fences_run_output_and_annotates_failure(tmp_path: Path) -> None:
    fake = FakePrefect([RUNNING, ("FAILED", "RolledBack")])
    code, output, _ = run_fake(fake, tmp_path, github_actions=True)
    assert code == Exit.ROLLED_BACK
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("::stop-commands::"))
    token = lines[start].removeprefix("::stop-commands::")
    assert len(token) == 32
    end = lines.index(f"::{token}::")
    assert start < end
    assert any(" STATE " in line for line in lines[start:end])
    assert lines[end + 1].startswith(
        "::error title=Deploy to staging::rolled back after the switch"
    )


def test_summary_write_failure_keeps_the_exit_code(tmp_path: Path) -> None:
    fake = FakePrefect([("COMPLETED", "Completed")])
    code, output, _ = run_fake(fake, tmp_path, summary_path=tmp_path / "missing" / "summary.md")
    assert code == Exit.COMPLETED
    assert "cannot write the job summary" in output


def test_step_outputs_for_github(tmp_path: Path) -> None:
    fake = FakePrefect([RUNNING, ("FAILED", "Rejected")])
    outputs = tmp_path / "github_output"
    code, _, _ = run_fake(fake, tmp_path, outputs_path=outputs)
    assert code == Exit.REJECTED
    assert outputs.read_text().splitlines() == [
        "result=rejected",
        "exit-code=4",
        f"flow-run-id={fake.run_id}",
        f"flow-run-url=http://127.0.0.1:4200/runs/flow-run/{fake.run_id}",
    ]
    report = Report(environment="dev", image="app:1", commit=None, started_only=True)
    assert github.step_outputs(report)["result"] == "started"


# --- command line -------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bascule trigger")
    tr.add_arguments(parser)
    return parser.parse_args(argv)


def test_options_from_arguments_prefect_settings_and_github(tmp_path: Path) -> None:
    args = parse("staging", "--image", "app:1", "--commit", "abc1234", "--timeout", "0")
    environ = {"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md"), "GITHUB_ACTIONS": "true"}
    prefect = {PREFECT_API_URL: API, PREFECT_API_KEY: "pnu_x", PREFECT_API_AUTH_STRING: SECRET}
    with temporary_settings(updates=prefect):
        found = tr.options_from(args, environ)
    assert (found.environment, found.image, found.commit) == ("staging", "app:1", "abc1234")
    assert (found.api.url, found.api.key, found.api.auth_string) == (API, "pnu_x", SECRET)
    assert found.summary_path == tmp_path / "s.md"
    assert found.outputs_path is None
    assert found.wait_timeout is None  # 0: no limit
    assert found.github_actions is True
    assert SECRET not in repr(found)
    # CI waits out a restarting server: the trigger's own default, not the interactive one.
    assert found.api_patience == options.DEFAULT_API_PATIENCE
    assert found.deployment_name == "deploy/staging"
    with temporary_settings(updates=prefect):
        other = tr.options_from(parse("staging", "--image", "app:1", "--deployment", OTHER), {})
    assert other.deployment_name == OTHER


def test_help_lists_the_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--help")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "GITHUB_OUTPUT"):
        assert name in text


def test_missing_image_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        parse("staging")
    assert exc.value.code == Exit.USAGE


def test_output_also_masks_the_apps_secrets_this_process_has(tmp_path: Path) -> None:
    from bascule.trigger.options import app_secret_values

    deployments = copy_deployments(tmp_path)
    with (deployments / "dev.yaml").open("a") as f:
        f.write("secrets:\n  TOKEN: {env: CI_TOKEN}\n  OTHER: {env: NOT_HERE}\n")
    environ = {"CI_TOKEN": "ci-t0ken-value"}
    values = app_secret_values("dev", environ, deployments)
    assert values == ("ci-t0ken-value",)
    assert app_secret_values("../dev", environ, deployments) == ()
    assert app_secret_values("staging", environ, deployments) == ()
    stream = io.StringIO()
    github.Output(stream, values).line("state message: ci-t0ken-value")
    assert stream.getvalue() == "state message: ***\n"


# --- --rollback -----------------------------------------------------------------------------------


def test_rollback_starts_the_environments_rollback_flow_with_its_parameters(tmp_path: Path) -> None:
    fake = FakePrefect([RUNNING, ("COMPLETED", "Completed")], deployment="rollback/staging")
    code, output, summary = run_fake(
        fake, tmp_path, image=None, commit=None, rollback=True, to_release="r-7", nonce="n1"
    )
    assert code == Exit.COMPLETED, output
    assert "of rollback/staging" in output
    assert "bascule: rollback of staging to r-7" in output
    assert fake.created_body is not None
    assert fake.created_body["parameters"] == {"environment": "staging", "to_release": "r-7"}
    assert "rollback to r-7" in summary


def test_each_rollback_has_a_key_of_its_own_and_its_retries_share_it() -> None:
    def key(nonce: str, **over: Any) -> str:
        given: dict[str, Any] = {"rollback": True, "nonce": nonce, **over}
        return options.Options("staging", None, ApiSettings(API), **given).idempotency_key

    assert key("a") == key("a")
    assert len({key("a"), key("b"), key("a", to_release="r-1"), key("a", app="web")}) == 4
    deploy = options.Options("staging", "app:1", ApiSettings(API)).idempotency_key
    assert deploy not in {key("a"), key("")}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rollback": True, "commit": "abc1234"}, "--rollback takes no --image, --commit"),
        (
            {"rollback": True, "image": None, "commit": None, "require_digest": True},
            "no --require-digest",
        ),
        ({"image": None}, "give --image REF to deploy, or --rollback"),
        ({"to_release": "r-1"}, "--to RELEASE_ID goes with --rollback"),
    ],
)
def test_rollback_usage_errors_call_nothing(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    fake = FakePrefect([SCHEDULED], deployment="rollback/staging")
    code, output, _ = run_fake(fake, tmp_path, **changes)
    assert code == Exit.USAGE
    assert message in output
    assert fake.requests == []


def test_rollback_and_image_exclude_each_other_on_the_command_line() -> None:
    args = parse("staging", "--rollback", "--to", "r-3")
    assert (args.rollback, args.to_release, args.image) == (True, "r-3", None)
    with pytest.raises(SystemExit) as exc:
        parse("staging", "--rollback", "--image", "app:1")
    assert exc.value.code == Exit.USAGE
