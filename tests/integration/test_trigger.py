"""``bascule trigger`` against a real Prefect server (with basic auth, as self-hosted servers
are run), with STAND-IN deploy flows served under the real deployment names.

The stand-ins test the trigger only: each ends in the final state the real deploy flow uses
for one outcome, chosen by the image tag. They deploy nothing, but are imported with the
adjustments the real flows make to Prefect's engine (flows/engine.py): an expected failure
reads as one line in the run's log, a bug keeps its traceback. The real flow's own tests are
elsewhere.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bascule.outcome import RESULTS, Exit
from tests.support import processes
from tests.support.cluster import Cluster
from tests.support.prefect_server import (
    PrefectServer,
    free_port,
    running_prefect_server,
    server_database,
)

pytestmark = [pytest.mark.prefect, pytest.mark.cluster]  # the cluster: its PostgreSQL

REPO = Path(__file__).resolve().parents[2]
# Fake, but shaped like a real one so that redaction is tested on something realistic.
AUTH_STRING = "bascule-ci:Zq8-not-a-real-password-41x"
ENVIRONMENTS = ("dev", "staging", "production")
COMMIT = "0123456789abcdef0123456789abcdef01234567"

STAND_IN_FLOWS = '''\
"""STAND-IN deploy flow for the trigger's tests: it deploys nothing. The tag of the image says
which final state to end in, one per outcome the trigger tells apart. A module, imported in
each flow-run process as the real flows are: with the same adjustments to Prefect's engine."""

import os
import time

from prefect import flow, get_run_logger, serve
from prefect.flow_runs import pause_flow_run
from prefect.states import Failed

from bascule.errors import Unreachable
from bascule.outcome import StateName
from bascule.flows.engine import expected_failures_in_one_line

expected_failures_in_one_line()

# The final states the real deploy flow names, and one Prefect names itself.
NAMED = {
    "rolledback": StateName.ROLLED_BACK,
    "rejected": StateName.REJECTED,
    "approvaltimedout": StateName.APPROVAL_TIMED_OUT,
    "lockheld": StateName.LOCK_HELD,
    "prefecttimedout": "TimedOut",
}


@flow(name="deploy")
def deploy(environment: str, image: str | None = None, commit: str | None = None):
    logger = get_run_logger()
    outcome = (image or "").rsplit(":", 1)[-1]
    logger.info("stand-in deploy of %s to %s at %s: ends %s", image, environment, commit, outcome)
    if outcome == "fails":  # a bug
        raise RuntimeError("stand-in failure")
    if outcome == "unreachable":  # an expected failure, raised
        raise Unreachable("stand-in: the database at db:5432 did not answer")
    if outcome in NAMED:
        return Failed(name=NAMED[outcome], message=f"stand-in: ends {NAMED[outcome]}")
    if outcome == "paused":
        pause_flow_run(timeout=600)
    if outcome == "leaks":
        # A flow that logs its credentials: the trigger must not repeat them.
        logger.warning("auth %s", os.environ["PREFECT_API_AUTH_STRING"])
    logger.info("stand-in multi-line\\n::error::not a workflow command")
    return "stand-in done"


def main():
    serve(*(deploy.to_deployment(name=env) for env in ("dev", "staging", "production")))
'''


@dataclass(frozen=True)
class Served:
    server: PrefectServer

    def image(self, outcome: str) -> str:
        return f"registry.example/bascule/standin:{outcome}"


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> Iterator[Served]:
    """A Prefect server requiring basic auth, and the stand-in flows served on it."""
    with (
        server_database(cluster) as url,
        running_prefect_server(auth_string=AUTH_STRING, database_url=url) as server,
        tempfile.TemporaryDirectory(prefix="bascule-standin-") as tmp,
    ):
        (Path(tmp) / "standin_flows.py").write_text(STAND_IN_FLOWS)
        env = server.client_env()
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"
        env["PYTHONPATH"] = str(REPO)  # the stand-ins name their states with bascule.outcome
        log = (Path(tmp) / "serve.log").open("wb")
        # Own session: stopping the group stops the flow-run processes it started, too.
        proc = subprocess.Popen(
            [sys.executable, "-c", "import standin_flows; standin_flows.main()"],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for_deployments(server, proc, Path(tmp) / "serve.log")
            yield Served(server)
        finally:
            processes.stop(proc, group=True)
            log.close()


def _wait_for_deployments(server: PrefectServer, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=server.api_url, auth=_basic_auth()) as api:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"serving the stand-in flows failed:\n{log.read_text()}")
            codes = [api.get(f"/deployments/name/deploy/{env}").status_code for env in ENVIRONMENTS]
            if codes == [200, 200, 200]:
                return
            time.sleep(0.5)
    raise RuntimeError(f"stand-in deployments not registered in 90s:\n{log.read_text()}")


@dataclass(frozen=True)
class Result:
    code: int
    output: str
    summary: str

    @property
    def run_ids(self) -> list[str]:
        return re.findall(r"/runs/flow-run/([0-9a-f-]{36})", self.output)


class Trigger:
    """``bascule trigger`` as a separate process, the way a workflow runs it."""

    def __init__(self, served: Served, tmp: Path, name: str, *args: str, **env: str) -> None:
        self.summary = tmp / f"{name}-summary.md"
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PREFECT_", "GITHUB_"))
        }
        environ.update(
            PREFECT_API_URL=served.server.api_url,
            PREFECT_API_AUTH_STRING=AUTH_STRING,
            GITHUB_STEP_SUMMARY=str(self.summary),
            PYTHONPATH=str(REPO),
        )
        environ.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bascule.cli", "trigger", *args],
            env=environ,
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def result(self, timeout: float = 180) -> Result:
        output, _ = self.proc.communicate(timeout=timeout)
        summary = self.summary.read_text() if self.summary.exists() else ""
        return Result(self.proc.returncode, output, summary)


def run_trigger(served: Served, tmp: Path, name: str, *args: str, **env: str) -> Result:
    return Trigger(served, tmp, name, *args, **env).result()


OUTCOMES = {
    "completed": Exit.COMPLETED,
    "fails": Exit.FAILED,
    "rolledback": Exit.ROLLED_BACK,
    "rejected": Exit.REJECTED,
    "approvaltimedout": Exit.APPROVAL_TIMED_OUT,
    # Another deploy holds the lock: refused before anything changed, like a usage error.
    "lockheld": Exit.USAGE,
    # Prefect's own TimedOut (a concurrency slot not acquired in time) is no approval's.
    "prefecttimedout": Exit.FAILED,
    "unreachable": Exit.FAILED,
}
# Only a bug shows a traceback.
BUGS = {"fails"}


@pytest.fixture(scope="module")
def outcomes(served: Served, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every outcome, triggered at once (one run each) to keep the module quick."""
    tmp = tmp_path_factory.mktemp("outcomes")
    started = {
        outcome: Trigger(
            served,
            tmp,
            outcome,
            ENVIRONMENTS[i % 3],
            "--image",
            served.image(outcome),
            "--commit",
            COMMIT,
            "--timeout",
            "150",
        )
        for i, outcome in enumerate(OUTCOMES)
    }
    # A paused run waits for a person: start one, and once it is Paused follow it again (the
    # same inputs find the same run) with a short timeout, which must end the wait.
    paused_args = ("staging", "--image", served.image("paused"), "--commit", COMMIT)
    start = run_trigger(served, tmp, "paused-start", *paused_args, "--no-wait")
    _wait_for_state(served, start.run_ids[0], "PAUSED")
    results = {"paused": run_trigger(served, tmp, "paused", *paused_args, "--timeout", "3")}
    results.update((outcome, trigger.result()) for outcome, trigger in started.items())
    return results


def _wait_for_state(served: Served, run_id: str, state_type: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=served.server.api_url, auth=_basic_auth()) as api:
        while time.monotonic() < deadline:
            run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
            if run["state_type"] == state_type:
                return
            time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} not {state_type} after {timeout}s: {run['state']}")


def _basic_auth() -> tuple[str, str]:
    user, _, password = AUTH_STRING.partition(":")
    return user, password


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_exit_code_tells_how_the_run_ended(outcomes: dict[str, Result], outcome: str) -> None:
    result = outcomes[outcome]
    assert result.code == OUTCOMES[outcome], result.output
    # Logs of the run are streamed, and multi-line ones cannot start a line of their own.
    assert f"stand-in deploy of {'registry.example/bascule/standin:' + outcome}" in result.output
    assert not any(line.startswith("::error::not") for line in result.output.splitlines())
    # Its verdict is the last line; a bug's traceback is in the run's log, and nothing else.
    code = OUTCOMES[outcome]
    last = result.output.rstrip("\n").splitlines()[-1]
    assert last.startswith("bascule: flow run ended "), result.output[-3000:]
    assert last.endswith(f": {RESULTS[code]} (exit {int(code)})"), last
    if outcome in BUGS:
        assert "Traceback" in result.output and "RuntimeError: stand-in failure" in result.output
    else:
        assert "Traceback" not in result.output, result.output[-6000:]


def test_summary_has_result_timings_and_link(outcomes: dict[str, Result], served: Served) -> None:
    result = outcomes["completed"]
    summary = result.summary
    ui = served.server.api_url.removesuffix("/api")
    assert f"### ✅ Deploy to `dev`: {RESULTS[Exit.COMPLETED]} (exit 0)" in summary
    assert "| Image | `registry.example/bascule/standin:completed` |" in summary
    assert f"| Commit | `{COMMIT}` |" in summary
    assert f"]({ui}/runs/flow-run/{result.run_ids[0]})" in summary
    for row in ("Created", "Started", "Ended", "Duration"):
        assert re.search(rf"^\| {row} \| \d", summary, re.MULTILINE), summary
    assert "| Final state | RolledBack: stand-in: ends RolledBack |" in (
        outcomes["rolledback"].summary
    )
    lock_held = outcomes["lockheld"].summary.splitlines()[0]
    assert lock_held.endswith(f": {RESULTS[Exit.USAGE]} (exit 2)"), lock_held


def test_the_link_opens_the_run_in_the_ui(outcomes: dict[str, Result]) -> None:
    url = re.search(r"https?://\S+/runs/flow-run/\S+", outcomes["completed"].output)
    assert url is not None
    # The UI is a single-page app: a browser asking for any of its paths gets the app.
    page = httpx.get(url.group(0), headers={"Accept": "text/html"}, follow_redirects=True)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


def test_paused_run_waits_until_the_trigger_timeout(outcomes: dict[str, Result]) -> None:
    result = outcomes["paused"]
    assert result.code == Exit.WAIT_TIMED_OUT, result.output
    assert "waiting for approval in the Prefect UI (not an error)" in result.output
    assert "stopped waiting after 3s; the run is still Paused and goes on: http" in result.output
    assert "still running when the trigger stopped waiting (exit 6)" in result.summary


def test_same_commit_and_image_returns_the_same_run(
    outcomes: dict[str, Result], served: Served, tmp_path: Path
) -> None:
    first = outcomes["completed"]
    again = run_trigger(
        served, tmp_path, "again", "dev", "--image", served.image("completed"), "--commit", COMMIT
    )
    assert again.code == Exit.COMPLETED, again.output
    assert again.run_ids[0] == first.run_ids[0]
    assert "exists already" in again.output
    # Another environment is another deployment: a new run, although the key material is close.
    other = run_trigger(
        served,
        tmp_path,
        "other",
        "production",
        "--image",
        served.image("completed"),
        "--commit",
        COMMIT,
        "--no-wait",
    )
    assert other.code == Exit.COMPLETED, other.output
    assert other.run_ids[0] != first.run_ids[0]
    assert "started (not waited for)" in other.summary
    # --rerun deploys the same inputs again on purpose, once per label.
    rerun = [
        run_trigger(
            served,
            tmp_path,
            f"rerun{i}",
            "dev",
            "--image",
            served.image("completed"),
            "--commit",
            COMMIT,
            "--rerun",
            "after-fix",
            "--no-wait",
        )
        for i in range(2)
    ]
    assert rerun[0].run_ids[0] not in (first.run_ids[0], other.run_ids[0])
    assert rerun[1].run_ids[0] == rerun[0].run_ids[0]


def test_secret_auth_string_never_printed(served: Served, tmp_path: Path) -> None:
    result = run_trigger(
        served,
        tmp_path,
        "leaks",
        "dev",
        "--image",
        served.image("leaks"),
        "--commit",
        "abcdef0",
        GITHUB_ACTIONS="true",
    )
    assert result.code == Exit.COMPLETED, result.output
    assert "auth ***" in result.output  # the stand-in logged it; the trigger masked it
    password = AUTH_STRING.split(":", 1)[1]
    encoded = base64.b64encode(AUTH_STRING.encode()).decode()
    for text in (result.output, result.summary):
        assert password not in text
        assert encoded not in text
    # In GitHub Actions the run's lines are fenced so they cannot issue workflow commands.
    tokens = re.findall(r"^::stop-commands::(\w+)$", result.output, re.MULTILINE)
    assert len(tokens) == 1
    assert f"\n::{tokens[0]}::\n" in result.output


def test_wrong_credentials_are_a_config_error(served: Served, tmp_path: Path) -> None:
    wrong = "bascule-ci:wrong-password-7731"
    result = run_trigger(
        served,
        tmp_path,
        "wrong",
        "dev",
        "--image",
        served.image("completed"),
        PREFECT_API_AUTH_STRING=wrong,
    )
    assert result.code == Exit.USAGE, result.output
    assert "refused the credentials (HTTP 401)" in result.output
    assert "wrong-password-7731" not in result.output + result.summary


def test_unknown_deployment_is_a_config_error(served: Served, tmp_path: Path) -> None:
    result = run_trigger(served, tmp_path, "qa", "qa", "--image", served.image("completed"))
    assert result.code == Exit.USAGE, result.output
    assert "there is no deployment deploy/qa" in result.output


def test_check_finds_the_deployment_and_starts_nothing(served: Served, tmp_path: Path) -> None:
    result = run_trigger(
        served, tmp_path, "check", "staging", "--image", served.image("completed"), "--check"
    )
    assert result.code == Exit.COMPLETED, result.output
    assert "deployment deploy/staging" in result.output
    assert result.run_ids == []
    assert result.summary == ""


def test_invalid_image_is_refused_before_any_call(served: Served, tmp_path: Path) -> None:
    result = run_trigger(
        served,
        tmp_path,
        "bad",
        "production",
        "--image",
        "registry.example/app:1.2",
        "--require-digest",
    )
    assert result.code == Exit.USAGE, result.output
    assert "has no digest" in result.output


def _flow_run_count(served: Served) -> int:
    with httpx.Client(base_url=served.server.api_url, auth=_basic_auth()) as api:
        count: int = api.post("/flow_runs/count", json={}).raise_for_status().json()
        return count


@pytest.mark.parametrize("image", ["registry.example/bascule/standin:latest", "app", "app:latest"])
def test_moving_or_missing_tag_is_refused_before_any_run(
    served: Served, tmp_path: Path, image: str
) -> None:
    """The flow refuses a release image without a version tag or digest; the trigger must
    refuse it first, not create a run that fails (exit 2, not 1, and no failed run)."""
    before = _flow_run_count(served)
    result = run_trigger(served, tmp_path, "latest", "dev", "--image", image, "--commit", COMMIT)
    assert result.code == Exit.USAGE, result.output
    assert "image" in result.output
    assert result.run_ids == []
    assert _flow_run_count(served) == before


def test_unreachable_api(tmp_path: Path, served: Served) -> None:
    # A loopback port nothing listens on.
    dead = PrefectServer(
        api_url=f"http://127.0.0.1:{free_port()}/api", home=tmp_path, pid=0, auth_string=None
    )
    result = run_trigger(
        Served(dead),
        tmp_path,
        "dead",
        "dev",
        "--image",
        served.image("completed"),
        "--api-patience",
        "3",
    )
    assert result.code == Exit.UNREACHABLE, result.output
    assert "cannot reach the Prefect API" in result.output
