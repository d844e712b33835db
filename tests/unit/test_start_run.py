"""The trigger's two first calls without Prefect's client (bascule.start_run): the same requests
Prefect's client makes, its CSRF token, its retries; and the settings they use, read without
importing Prefect (bascule.prefect_api) exactly as Prefect reads them, or else by Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from prefect.client.constants import SERVER_API_VERSION
from prefect.client.orchestration import SyncPrefectClient
from prefect.settings import PREFECT_CLIENT_CUSTOM_HEADERS, Settings, temporary_settings

from bascule import retry
from bascule.prefect_api import ApiSettings, from_environment, ui_base_url
from bascule.start_run import API_VERSION, RunSeen, RunStarter

API = "http://127.0.0.1:4200/api"
DEPLOYMENT = "my flow/eu west 1"  # a name Prefect allows, with what a path must escape
DEPLOYMENT_JSON = {"id": str(UUID(int=1)), "name": "eu west 1", "flow_id": str(UUID(int=2))}
RUN = {
    "id": str(UUID(int=7)),
    "name": "brave-fox",
    "flow_id": str(UUID(int=2)),
    "state": {"type": "SCHEDULED", "name": "Scheduled", "message": None},
    "created": "2026-01-02T03:04:05.123456Z",
    "start_time": None,
    "end_time": None,
    "labels": {"a": "b"},
}


class Server:
    """Records requests; answers by path, each answer list consumed in order (the last kept)."""

    def __init__(self, **answers: list[httpx.Response | Exception]) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: dict[str, list[httpx.Response | Exception]] = {
            "deployment": [httpx.Response(200, json=DEPLOYMENT_JSON)],
            "create": [httpx.Response(201, json=RUN)],
            "csrf": [httpx.Response(404, json={"detail": "Not Found"})],
            **answers,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        key = (
            "csrf"
            if path.endswith("/csrf-token")
            else "create"
            if path.endswith("/create_flow_run")
            else "deployment"
        )
        answers = self.answers[key]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def start(server: Server, api: ApiSettings | None = None) -> tuple[RunSeen, bool]:
    with RunStarter(api or ApiSettings(API, auth_string="u:pw"), server.transport()) as rest:
        return rest.create_flow_run(rest.deployment_id(DEPLOYMENT), {"image": "a:1"}, "key-1")


def test_the_same_requests_as_prefects_client() -> None:
    ours, theirs = Server(), Server()
    headers = {"X-Team": "deploys"}
    api = ApiSettings(API, auth_string="u:pw", custom_headers=tuple(headers.items()))
    start(ours, api)
    with temporary_settings(updates={PREFECT_CLIENT_CUSTOM_HEADERS: headers}):
        client = SyncPrefectClient(
            API, auth_string="u:pw", httpx_settings={"transport": theirs.transport()}
        )
        with client:
            found = client.read_deployment_by_name(DEPLOYMENT)
            client.create_flow_run_from_deployment(
                found.id, parameters={"image": "a:1"}, idempotency_key="key-1"
            )
    assert [(r.method, r.url.path) for r in ours.requests] == [
        (r.method, r.url.path) for r in theirs.requests
    ]
    assert ours.requests[0].url.raw_path == theirs.requests[0].url.raw_path
    assert ours.requests[0].url.raw_path == b"/api/deployments/name/my%20flow/eu%20west%201"
    for mine, prefects in zip(ours.requests, theirs.requests, strict=True):
        for name in ("Authorization", "X-PREFECT-API-VERSION", "X-Team", "Content-Type"):
            assert mine.headers.get(name) == prefects.headers.get(name), name
    body, prefects_body = (json.loads(s.requests[-1].content) for s in (ours, theirs))
    times = [
        datetime.fromisoformat(b["state"]["state_details"].pop("scheduled_time"))
        for b in (body, prefects_body)
    ]
    assert body == prefects_body
    assert abs((times[0] - times[1]).total_seconds()) < 5
    assert API_VERSION == SERVER_API_VERSION


def test_the_run_as_the_api_gives_it() -> None:
    run, created = start(Server())
    assert created
    assert run == RunSeen(
        id=UUID(int=7),
        name="brave-fox",
        state_type="SCHEDULED",
        state_name="Scheduled",
        labels={"a": "b"},
        created=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    )
    _, created = start(Server(create=[httpx.Response(200, json=RUN)]))
    assert not created  # the run this idempotency key made before


def test_a_csrf_token_on_changes_where_the_server_wants_one() -> None:
    token = {"token": "t0k", "client": "c", "expiration": "2099-01-01T00:00:00Z"}
    server = Server(csrf=[httpx.Response(200, json=token)])
    start(server)
    get, csrf, post = server.requests
    assert csrf.url.path == "/api/csrf-token"
    client = csrf.url.params["client"]
    assert "Prefect-Csrf-Token" not in get.headers
    assert (post.headers["Prefect-Csrf-Token"], post.headers["Prefect-Csrf-Client"]) == (
        "t0k",
        client,
    )
    off = httpx.Response(422, json={"detail": "CSRF protection is disabled."})
    server = Server(csrf=[off])
    start(server)
    assert "Prefect-Csrf-Token" not in server.requests[-1].headers
    server = Server(csrf=[httpx.Response(200, json=token)])
    start(server, ApiSettings(API, csrf=False))
    assert [r.url.path.rsplit("/", 1)[-1] for r in server.requests] == [
        "eu west 1",
        "create_flow_run",
    ]


def busy(status: int, after: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": after} if after else {})


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    return slept


def test_busy_answers_are_waited_out_as_prefects_client_does(waits: list[float]) -> None:
    ok = httpx.Response(200, json={"id": str(UUID(int=1))})
    api = ApiSettings(API, retry_jitter=0.0, retry_extra_codes=frozenset({520}))
    server = Server(deployment=[busy(503, "3"), busy(429), busy(520), busy(502, "soon"), ok])
    with RunStarter(api, server.transport()) as rest:
        assert rest.deployment_id("deploy/dev") == UUID(int=1)
        assert rest.retries == 4
    # Retry-After in seconds; else 2, 4, 8 s after the first, second, third failed try.
    assert waits == [3.0, 4.0, 8.0, 16.0]


def test_the_last_busy_answer_and_other_errors_raise(waits: list[float]) -> None:
    api = ApiSettings(API, max_retries=2, retry_jitter=0.0)
    server = Server(deployment=[busy(503, "0")])
    with RunStarter(api, server.transport()) as rest, pytest.raises(httpx.HTTPStatusError):
        rest.deployment_id("deploy/dev")
    assert len(server.requests) == 3  # the first try and two more
    for failure in (httpx.Response(500), httpx.Response(404), httpx.ConnectError("refused")):
        server = Server(deployment=[failure])
        with RunStarter(api, server.transport()) as rest, pytest.raises(httpx.HTTPError):
            rest.deployment_id("deploy/dev")
        assert len(server.requests) == 1


def test_a_server_under_maintenance_is_waited_for_past_the_retries(waits: list[float]) -> None:
    api = ApiSettings(API, max_retries=1, retry_jitter=0.0)
    maintenance = httpx.Response(503, headers={"Prefect-Maintenance": "true", "Retry-After": "1"})
    server = Server(deployment=[maintenance] * 4 + [httpx.Response(200, json=DEPLOYMENT_JSON)])
    with RunStarter(api, server.transport()) as rest:
        assert rest.deployment_id("deploy/dev") == UUID(int=1)
    assert waits == [1.0] * 4


def test_dropped_connections_are_tried_again(waits: list[float]) -> None:
    api = ApiSettings(API, retry_jitter=0.0)
    refused = httpx.ConnectError("refused")
    # A refused connection after the server answered once: it is restarting.
    server = Server(
        deployment=[httpx.ReadTimeout("slow")],
        create=[refused, httpx.Response(201, json=RUN)],
    )
    server.answers["deployment"].append(httpx.Response(200, json={"id": str(UUID(int=1))}))
    with RunStarter(api, server.transport()) as rest:
        rest.create_flow_run(rest.deployment_id("deploy/dev"), {}, "k")
    assert waits == [2.0, 2.0]


# --- the settings, without Prefect ----------------------------------------------------------------

PROFILES = """\
active = "ci"

[profiles.ci]
PREFECT_API_URL = "https://prefect.example/api"
PREFECT_API_KEY = "pnu_profile"
PREFECT_API_TLS_INSECURE_SKIP_VERIFY = true

[profiles.other]
PREFECT_API_URL = "http://other:4200/api"
PREFECT_UI_URL = "http://other-ui"
PREFECT_CLIENT_CUSTOM_HEADERS = '{"X-A": "1"}'
"""


def prefects_reading(
    environ: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> ApiSettings:
    for name in list(os.environ):
        if name.upper().startswith("PREFECT_"):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    return ApiSettings.of(Settings())


CASES: dict[str, tuple[dict[str, str], Callable[[Path], None] | None]] = {
    "environment": ({"PREFECT_API_URL": API, "PREFECT_API_AUTH_STRING": "u:pw"}, None),
    "names in any case": ({"prefect_api_url": API, "Prefect_Api_Key": "pnu_x"}, None),
    "tls and headers": (
        {
            "PREFECT_API_URL": API,
            "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "Yes",
            "PREFECT_API_SSL_CERT_FILE": "/ca.pem",
            "PREFECT_CLIENT_CUSTOM_HEADERS": '{"X-Team": "deploys"}',
            "PREFECT_UI_URL": "http://ui",
        },
        None,
    ),
    "an empty key": ({"PREFECT_API_URL": API, "PREFECT_API_KEY": ""}, None),
    "the active profile": ({}, lambda home: (home / "profiles.toml").write_text(PROFILES)),
    "the environment over the profile": (
        {"PREFECT_API_URL": API, "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "false"},
        lambda home: (home / "profiles.toml").write_text(PROFILES),
    ),
    "another profile": (
        {"PREFECT_PROFILE": "other"},
        lambda home: (home / "profiles.toml").write_text(PROFILES),
    ),
    "no such profile": (
        {"PREFECT_PROFILE": "none"},
        lambda home: (home / "profiles.toml").write_text(PROFILES),
    ),
    "a pyproject.toml of the app's": (
        {"PREFECT_API_URL": API},
        lambda home: (home.parent / "cwd" / "pyproject.toml").write_text("[tool.ruff]\n"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_read_as_prefect_reads_them(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ, files = CASES[case]
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    if files is not None:
        files(home)
    environ = {"PREFECT_HOME": str(home), **environ}
    process_environ = {**os.environ, **environ}
    process_environ = {
        k: v
        for k, v in process_environ.items()
        if not k.upper().startswith("PREFECT_") or k in environ
    }
    ours = from_environment(process_environ, cwd, tmp_path / "nobody")
    assert ours is not None
    theirs = prefects_reading(environ, cwd, monkeypatch)
    # Prefect derives a UI address where none is set; the trigger's links derive the same.
    assert ui_base_url(str(ours.url), ours.ui_url) == ui_base_url(str(theirs.url), theirs.ui_url)
    assert replace(ours, ui_url=None) == replace(theirs, ui_url=None)


FALLBACKS: dict[str, tuple[dict[str, str], str, str]] = {
    ".env": ({}, ".env", "PREFECT_API_URL=http://dotenv/api\n"),
    "prefect.toml": ({}, "prefect.toml", '[api]\nurl = "http://toml/api"\n'),
    "pyproject.toml": ({}, "pyproject.toml", '[tool.prefect.api]\nurl = "http://py/api"\n'),
    "a client setting": ({"PREFECT_CLIENT_MAX_RETRIES": "0"}, "", ""),
    "in the profile": (
        {},
        "home/profiles.toml",
        'active="a"\n[profiles.a]\nPREFECT_API_REQUEST_TIMEOUT=1\n',
    ),
    "a test mode": ({"PREFECT_TESTING_UNIT_TEST_MODE": "1"}, "", ""),
    "another test mode": ({"PREFECT_UNIT_TEST_MODE": "1"}, "", ""),
    "not a boolean": ({"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "maybe"}, "", ""),
    "headers not JSON": ({"PREFECT_CLIENT_CUSTOM_HEADERS": "X-A: 1"}, "", ""),
    "a broken profiles file": ({}, "home/profiles.toml", "active = \n"),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_prefect_reads_what_might_read_otherwise(case: str, tmp_path: Path) -> None:
    environ, name, text = FALLBACKS[case]
    (tmp_path / "home").mkdir()
    if name:
        (tmp_path / name).write_text(text)
    environ = {"PREFECT_API_URL": API, "PREFECT_HOME": str(tmp_path / "home"), **environ}
    assert from_environment(environ, tmp_path, tmp_path) is None


def test_the_run_exists_before_prefect_is_imported(tmp_path: Path) -> None:
    """``bascule trigger --no-wait`` start to end, in a process of its own: it never imports
    Prefect (0.8 s), and sends the settings it read."""
    script = f"""
import io, json, sys
import httpx
from bascule.prefect_api import ApiSettings
from bascule.trigger.options import Options
from bascule.trigger.start import trigger

run = json.loads({json.dumps(json.dumps(RUN))})
seen = []

def answer(request):
    seen.append(request)
    if request.url.path.endswith("create_flow_run"):
        return httpx.Response(201, json=run)
    if request.url.path.endswith("csrf-token"):
        return httpx.Response(404)
    return httpx.Response(200, json={{"id": "{uuid4()}"}})

api = ApiSettings.read()
code = trigger(Options("dev", "app:1", api, wait=False), io.StringIO(), httpx.MockTransport(answer))
assert code == 0, code
assert [m for m in sys.modules if m.split(".")[0] == "prefect"] == [], "prefect imported"
print(seen[-1].headers["Authorization"], seen[-1].headers["X-A"])
"""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PREFECT_")}
    env |= {
        "PREFECT_API_URL": API,
        "PREFECT_API_KEY": "pnu_k",
        "PREFECT_HOME": str(tmp_path),
        "PREFECT_CLIENT_CUSTOM_HEADERS": '{"X-A": "1"}',
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Bearer", "pnu_k", "1"]


def test_the_trigger_leaves_httpx_command_line_unimported() -> None:
    """``bascule trigger`` marks httpx's command line unimportable before httpx is imported
    (its rich, click and pygments cost the start ~50 ms); httpx itself still works."""
    script = """
import sys
from bascule.trigger import without_httpx_cli
without_httpx_cli()
import httpx
answer = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))).get("http://x")
assert answer.status_code == 204
print(sorted({m.split(".")[0] for m in sys.modules} & {"rich", "click", "pygments"}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]
