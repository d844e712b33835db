"""``--json`` of ``bascule status``, ``history``, ``secrets`` and ``pending``: each prints one
JSON document with the keys the README lists (parsed here with json.loads), from what the
cluster or the Prefect API said (faked); ``secrets`` never a value. The real cluster's answers
are parsed in tests/integration/test_deploy_flow.py."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import httpx
import pytest

import bascule.tasks.state
from bascule import approvals
from bascule.bluegreen import ColorState, Observed
from bascule.cli import inspect
from bascule.config import AppSecret
from bascule.history import Release, Step
from bascule.outcome import Exit
from bascule.prefect_client import ApiSettings, Prefect
from bascule.signoff import PREVIEW_KEY
from bascule.tasks import secretref
from tests.support.envs import write_envs

STATUS_KEYS = {
    "environment",
    "namespace",
    "app",
    "active_color",
    "image",
    "release",
    "colors",
    "in_flight",
}


def fake_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """``reading`` opens no cluster: its environment is just the names it was given."""

    @contextlib.contextmanager
    def reading(environment: str, directory: str, app: str | None = None) -> Iterator[Any]:
        yield SimpleNamespace(name=environment, ns=f"ns-{environment}", app=app)

    monkeypatch.setattr(inspect, "reading", reading)


def release(rid: str, image: str, color: str, **more: Any) -> Release:
    return Release(
        id=rid,
        image=image,
        color=color,  # type: ignore[arg-type]
        previous_image=None,
        previous_color=None,
        started="2026-12-01T10:00:00Z",
        **more,
    )


def printed(capsys: pytest.CaptureFixture[str]) -> Any:
    """The one JSON document the command printed (json.loads refuses anything around it)."""
    return json.loads(capsys.readouterr().out)


def test_status_json_is_one_object_per_environment_and_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_reading(monkeypatch)
    flight = release("r2", "app:v2", "green", phase="checking")
    serving = {
        "staging": Observed(
            "blue",
            {
                "blue": ColorState("blue", True, "app:v1", "r1", replicas=2, ready=2),
                "green": ColorState("green", True, "app:v2", "r2", replicas=2, ready=1),
            },
            in_flight=flight,
        ),
        "production": Observed(None, {}),
    }
    monkeypatch.setattr(bascule.tasks.state, "observe", lambda env: serving[env.name])
    args = argparse.Namespace(
        dir=write_envs(tmp_path / "cfg", "ns", None),
        app=None,
        environments=["staging", "production"],
        json=True,
    )
    assert inspect.status(args) == Exit.COMPLETED
    staging, production = printed(capsys)
    assert set(staging) == set(production) == STATUS_KEYS
    assert staging == {
        "environment": "staging",
        "namespace": "ns-staging",
        "app": "sample-app",
        "active_color": "blue",
        "image": "app:v1",
        "release": "r1",
        "colors": [
            {
                "color": "blue",
                "active": True,
                "image": "app:v1",
                "release": "r1",
                "ready": 2,
                "replicas": 2,
            },
            {
                "color": "green",
                "active": False,
                "image": "app:v2",
                "release": "r2",
                "ready": 1,
                "replicas": 2,
            },
        ],
        "in_flight": {"release": "r2", "phase": "checking", "color": "green"},
    }
    # Nothing deployed yet: nulls, not missing keys.
    assert production["active_color"] is production["image"] is production["in_flight"] is None
    assert production["colors"] == []


def test_history_json_is_the_records_newest_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_reading(monkeypatch)
    releases = [
        release(f"r{n}", f"app:v{n}", "blue" if n % 2 else "green", result="succeeded")
        for n in range(1, 5)
    ]
    releases[-1] = release(
        "r4",
        "app:v4",
        "green",
        phase="done",
        result="rolled-back",
        reason="error rate 12% > 5%",
        steps=(Step("switch", "ok", 0.4),),
    )
    monkeypatch.setattr(bascule.tasks.state, "read_history", lambda env: (releases, None))
    args = argparse.Namespace(
        dir=write_envs(tmp_path / "cfg", "ns", None),
        environment="staging",
        app=None,
        limit=3,
        json=True,
    )
    assert inspect.history(args) == Exit.COMPLETED
    doc = printed(capsys)
    assert {k: doc[k] for k in ("environment", "namespace", "app")} == {
        "environment": "staging",
        "namespace": "ns-staging",
        "app": "sample-app",
    }
    assert [r["id"] for r in doc["releases"]] == ["r4", "r3", "r2"]  # --limit, newest first
    newest = doc["releases"][0]
    assert (newest["result"], newest["reason"], newest["steps"][0]["name"]) == (
        "rolled-back",
        "error rate 12% > 5%",
        "switch",
    )
    # The keys are the history ConfigMap's own: each record reads back as the release it was.
    assert Release.from_json(newest) == releases[-1]


def test_secrets_json_names_sources_and_states_never_a_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake_reading(monkeypatch)
    value = "postgres://app:hunter2-very-secret@db/app"
    monkeypatch.setenv("T_DB_URL", value)
    monkeypatch.setenv("T_FLAG", "1")
    monkeypatch.delenv("T_MISSING", raising=False)
    refs = {
        "DB_URL": AppSecret(env="T_DB_URL"),
        "FLAG": AppSecret(env="T_FLAG", optional=True),
        "TOKEN": AppSecret(env="T_MISSING"),
        "API_KEY": AppSecret(kubernetes_secret={"name": "api", "key": "token"}),  # type: ignore[arg-type]
    }

    def status(env: Any) -> list[Any]:
        rows = []
        for name, ref in refs.items():
            if ref.kubernetes_secret is not None:  # no cluster here: what it would say
                rows.append((name, ref, None))
                continue
            try:
                secretref.resolve(ref, f"secrets.{name}")
                rows.append((name, ref, None))
            except (secretref.Missing, secretref.TooShort) as exc:
                rows.append((name, ref, exc))
        return rows

    monkeypatch.setattr(secretref, "status", status)
    args = argparse.Namespace(
        dir=write_envs(tmp_path / "cfg", "ns", None),
        environment="staging",
        app=None,
        json=True,
    )
    # A required one missing and one too short: a deploy would stop, as without --json.
    assert inspect.secrets(args) == Exit.USAGE
    out = capsys.readouterr().out
    assert "hunter2" not in out and "***" not in out
    doc = json.loads(out)
    assert (doc["environment"], doc["app"]) == ("staging", "sample-app")
    found = {s["name"]: s for s in doc["secrets"]}
    assert found["DB_URL"] == {
        "name": "DB_URL",
        "source": {"env": "T_DB_URL"},
        "required": True,
        "state": "resolves",
        "problem": None,
    }
    assert (found["FLAG"]["state"], found["FLAG"]["required"]) == ("short", False)
    assert found["TOKEN"]["state"] == "missing"
    assert "environment variable T_MISSING is not set" in found["TOKEN"]["problem"]
    assert found["API_KEY"]["source"] == {"kubernetes_secret": {"name": "api", "key": "token"}}
    assert doc["warnings"] == []


Handler = Callable[[httpx.Request], httpx.Response]


def test_pending_json_lists_each_paused_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        {
            "id": str(uuid4()),
            "name": name,
            "flow_id": str(uuid4()),
            "parameters": params,
            "state": {
                "type": "PAUSED",
                "name": "Paused",
                "state_details": {"pause_key": "approval"},
            },
        }
        for name, params in (
            ("brave-fox", {"environment": "production", "image": "app:v2"}),
            ("calm-owl", {"environment": "staging", "image": "api:v7", "app": "sample-api"}),
        )
    ]
    link = "https://preview.production.example/"
    previewed = runs[0]["id"]

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/flow_runs/filter"):
            return httpx.Response(200, json=runs)
        if path.endswith(f"/flow_runs/{previewed}/input/{PREVIEW_KEY}"):
            return httpx.Response(200, content=json.dumps(link).encode())
        if path.endswith("/input/paused-approval-description"):
            return httpx.Response(200, content=json.dumps("## Approve?").encode())
        return httpx.Response(404, json={"detail": "not here"})

    transport = httpx.MockTransport(handle)
    api = ApiSettings("http://127.0.0.1:4200/api")
    monkeypatch.setattr(approvals, "_prefect", lambda: Prefect(api, transport))
    args = argparse.Namespace(flow=None, details=True, json=True, api_patience=0.0)
    assert approvals.pending(args) == Exit.COMPLETED
    first, second = printed(capsys)
    assert first == {
        "id": runs[0]["id"],
        "name": "brave-fox",
        "environment": "production",
        "app": None,  # the environment file's own
        "image": "app:v2",
        "preview": link,
        "form": "## Approve?",
    }
    assert (second["app"], second["preview"]) == ("sample-api", None)
    # Nothing waits: an empty list, still JSON.
    runs.clear()
    assert approvals.pending(args) == Exit.COMPLETED
    assert printed(capsys) == []
