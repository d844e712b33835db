"""``bascule pending | approve | reject``: the answers of Prefect's resume endpoint as exit
codes (against a scripted fake of the API, through Prefect's client), and the same usage error
as ``trigger`` when no Prefect API is configured. The real gate is tested in
tests/integration/test_approval.py."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from bascule import approvals
from bascule.errors import OperationFailed, Unreachable, UsageError
from bascule.outcome import Exit
from bascule.prefect_client import ApiSettings, Prefect, api_errors, patiently
from bascule.signoff import PREVIEW_KEY, REQUEST_KEY, Request, Signer, Unverified
from bascule.sshsig import verify
from tests.support.signers import allowed_signers, fingerprint, keypair

REPO = Path(__file__).resolve().parents[2]
RUN = str(uuid4())


@pytest.mark.parametrize(
    "argv",
    [
        ["pending"],
        ["approve", RUN, "--as", "alice"],
        ["reject", RUN, "--as", "alice"],
        ["trigger", "dev", "--image", "registry.example/app:v1"],
    ],
)
def test_no_prefect_api_url_is_a_usage_error(tmp_path: Path, argv: list[str]) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    # A home of its own: no Prefect profile may set the URL either.
    env.update(PREFECT_HOME=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "bascule.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == Exit.USAGE, output
    assert "PREFECT_API_URL is not set" in output
    assert "Traceback" not in output


API = "http://127.0.0.1:4200/api"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Makes the commands talk to ``handler`` instead of a server; returns the requests."""

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        transport = httpx.MockTransport(record)
        monkeypatch.setattr(approvals, "_prefect", lambda: Prefect(ApiSettings(API), transport))
        return seen

    return install


def resume_answer(status: str, reason: str | None = None) -> Handler:
    details: dict[str, Any] = {"type": f"{status.lower()}_details"}
    if reason is not None:
        details["reason"] = reason

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/resume"):
            return httpx.Response(200, json={"status": status, "details": details, "state": None})
        return httpx.Response(404, json={"detail": "not here"})  # the CSRF token: none

    return handle


def decision(approver: str = "alice") -> argparse.Namespace:
    return argparse.Namespace(
        flow_run=UUID(RUN), approver=approver, comment="LGTM", api_patience=0.0
    )


def test_accepted_decision_sends_the_form_input(
    answer: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    seen = answer(resume_answer("ACCEPT"))
    assert approvals.approve(decision()) == Exit.COMPLETED
    assert f"{RUN}: approved by alice" in capsys.readouterr().out
    (resume,) = [r for r in seen if r.url.path.endswith("/resume")]
    body = json.loads(resume.content)
    assert body == {"run_input": {"approve": True, "approver": "alice", "comment": "LGTM"}}


def test_rejected_input_is_a_usage_error_and_abort_a_failure(
    answer: Callable[[Handler], list[httpx.Request]],
) -> None:
    answer(resume_answer("REJECT", "approver: must not be blank"))
    with pytest.raises(UsageError, match=r"not resumed \(REJECT\): approver: must not be blank"):
        approvals.reject(decision("   "))
    answer(resume_answer("ABORT", "This run is not paused"))
    with pytest.raises(OperationFailed, match=r"not resumed \(ABORT\): This run is not paused"):
        approvals.approve(decision())


def test_unknown_run_is_a_usage_error(answer: Callable[[Handler], list[httpx.Request]]) -> None:
    answer(lambda request: httpx.Response(404, json={"detail": "Flow run not found"}))
    with pytest.raises(UsageError, match=f"there is no flow run {RUN}"):
        approvals.approve(decision())


@pytest.mark.parametrize("details", [False, True])
def test_pending_lists_paused_runs(
    answer: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    details: bool,
) -> None:
    run = {
        "id": RUN,
        "name": "brave-fox",
        "flow_id": str(uuid4()),
        "parameters": {"environment": "production", "image": "app:v2"},
        "state": {"type": "PAUSED", "name": "Paused", "state_details": {"pause_key": "approval"}},
    }
    form = "## Approve app in production?\n```sql\nALTER TABLE items DROP COLUMN legacy\n```"

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/flow_runs/filter"):
            return httpx.Response(200, json=[run])
        if request.url.path.endswith(f"/flow_runs/{RUN}/input/paused-approval-description"):
            return httpx.Response(200, content=json.dumps(form).encode())
        if request.url.path.endswith(f"/flow_runs/{RUN}/input/{PREVIEW_KEY}"):
            return httpx.Response(200, content=json.dumps(link).encode())
        return httpx.Response(404, json={"detail": "not here"})

    link = "https://app-preview.production.example/"
    seen = answer(handle)
    args = argparse.Namespace(flow="deploy", details=details, json=False, api_patience=0.0)
    assert approvals.pending(args) == Exit.COMPLETED
    out = capsys.readouterr().out
    assert f"{RUN}  brave-fox  env=production image=app:v2  preview={link}\n" in out
    assert ("    ALTER TABLE items DROP COLUMN legacy" in out) is details
    (query,) = [json.loads(r.content) for r in seen if r.url.path.endswith("/flow_runs/filter")]
    assert query["flow_runs"]["state"]["type"]["any_"] == ["PAUSED"]
    assert query["flows"]["name"]["any_"] == ["deploy"]


# --- how Prefect's and httpx's errors come out -----------------------------------------------


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", f"{API}/x")
    response = httpx.Response(status, json={"detail": "why"}, request=request)
    return httpx.HTTPStatusError("scripted", request=request, response=response)


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (_status_error(401), UsageError, "refused the credentials (HTTP 401)"),
        (_status_error(403), UsageError, "refused the credentials (HTTP 403)"),
        (_status_error(404), UsageError, "no such thing"),
        (_status_error(422), UsageError, "reading x: HTTP 422: why"),
        (_status_error(429), Unreachable, "reading x: HTTP 429"),
        (_status_error(500), Unreachable, "reading x: HTTP 500"),
        (httpx.ConnectError("refused"), Unreachable, "reading x: ConnectError: refused"),
    ],
)
def test_api_errors_are_split_by_what_the_caller_can_do(
    error: Exception, kind: type[Exception], message: str
) -> None:
    with (
        pytest.raises(kind, match=re.escape(message)) as raised,
        api_errors("reading x", "no such thing"),
    ):
        raise error
    assert type(raised.value) is kind


def test_patience_retries_only_what_may_pass() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Unreachable("down")
        return "up"

    assert patiently(flaky, patience=5, interval=0) == "up"
    with pytest.raises(Unreachable, match=r"gave up after 0s\): down"):
        patiently(lambda: (_ for _ in ()).throw(Unreachable("down")), patience=0, interval=0)

    def refused() -> None:
        calls.append(1)
        raise UsageError("bad")

    calls.clear()
    with pytest.raises(UsageError):
        patiently(refused, patience=5, interval=0)
    assert len(calls) == 1


# --- signed approvals ----------------------------------------------------------------------------


def signed_run(asked: dict[str, str] | None) -> Handler:
    """A paused run that saved ``asked`` as its approval request (None: it saved none)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(f"/flow_runs/{RUN}/input/{REQUEST_KEY}") and asked:
            return httpx.Response(200, content=json.dumps(asked).encode())
        return resume_answer("ACCEPT")(request)

    return handle


def test_approve_with_a_key_signs_the_typed_run(
    answer: Callable[[Handler], list[httpx.Request]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = keypair(tmp_path, "ann")
    # What the server holds names another run: the signature must still be for RUN.
    other = {"run": str(uuid4()), "environment": "production", "app": "shop"}
    asked = {**other, "image": "shop:v2", "release": "r1"}
    seen = answer(signed_run(asked))
    args = decision()
    args.key = key
    assert approvals.approve(args) == Exit.COMPLETED
    # Sent, not approved: only the run knows whether the key counts and whether it needs more.
    out = capsys.readouterr().out
    assert f"{RUN}: approval signed with the key {key} sent; the run checks it" in out
    assert "approved by" not in out
    (resume,) = [r for r in seen if r.url.path.endswith("/resume")]
    signature = json.loads(resume.content)["run_input"]["signature"]
    signers = allowed_signers(tmp_path / "allowed_signers", {"ann": key})
    mine = Request(**{**asked, "run": RUN})
    assert verify(mine, signature, signers) == Signer("ann", fingerprint(key))
    assert isinstance(verify(Request(**asked), signature, signers), Unverified)


def test_approving_a_signed_run_without_a_key_sends_nothing(
    answer: Callable[[Handler], list[httpx.Request]],
) -> None:
    asked = {"run": RUN, "environment": "production", "app": "shop", "image": "a:1", "release": "r"}
    seen = answer(signed_run(asked))
    with pytest.raises(UsageError, match="takes signed approvals only: give --key"):
        approvals.approve(decision())
    assert not [r for r in seen if r.url.path.endswith("/resume")]


def test_a_key_for_a_run_that_takes_no_signature_is_a_usage_error(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    answer(signed_run(None))
    args = decision()
    args.key = tmp_path / "unused"
    with pytest.raises(UsageError, match="does not take signed approvals"):
        approvals.approve(args)
