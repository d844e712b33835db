"""Judging HTTP answers against health checks and smoke scenarios."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from bascule.checks import (
    _MISSING,
    Answer,
    Attempt,
    CheckResult,
    json_path,
    judge_health,
    judge_scenario,
    streak,
)


@dataclass
class Health:  # the fields of config.HealthCheck that judge_health reads
    json_field: str | None = None
    json_equals: Any = None
    expect_status: int = 200
    max_latency_ms: int | None = None
    name: str = "version"


@dataclass
class Scenario:  # the fields of config.SmokeHttpScenario that judge_scenario reads
    expect_body_contains: str | None = None
    expect_json: dict[str, Any] | None = None
    expect_status: int = 200
    name: str = "list-items"


def answer(status: int | None = 200, body: Any = None, ms: float = 12.0, **kw: Any) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
    return Answer(status, ms, raw, **kw)


VERSION = {"version": "v2", "ready": True, "degraded": False}
ITEMS = {"items": [{"id": 1, "name": "widget"}, {"id": 2, "name": "gadget"}], "count": 2}
REFUSED = answer(None, ms=5000.0, error="ConnectError: [Errno 111] Connection refused")


OK = "HTTP 200 in 12 ms"
FIELD = answer(200, VERSION)


@pytest.mark.parametrize(
    ("spec", "ans", "ok", "detail"),
    [
        pytest.param(Health(), answer(200, VERSION, 12.4), True, OK, id="ok"),
        pytest.param(Health(), answer(503), False, "HTTP 503, want 200", id="status"),
        pytest.param(Health(expect_status=204), answer(200), False, "HTTP 200, want 204", id="204"),
        pytest.param(Health(), REFUSED, False, f"no answer: {REFUSED.error}", id="no-answer"),
        pytest.param(
            Health(max_latency_ms=200), answer(ms=250.4), False, "250 ms, limit 200 ms", id="slow"
        ),
        pytest.param(
            Health(max_latency_ms=200), answer(ms=200.0), True, "HTTP 200 in 200 ms", id="at-limit"
        ),
        pytest.param(
            Health(max_latency_ms=200), answer(500, ms=900), False, "HTTP 500, want 200", id="500"
        ),
        pytest.param(Health("version"), FIELD, True, OK, id="field-present"),
        pytest.param(Health("build"), FIELD, False, "no JSON field 'build'", id="field-missing"),
        pytest.param(
            Health("version"), answer(body=b"<html/>"), False, "no JSON field 'version'", id="html"
        ),
        pytest.param(Health("version", "v2"), FIELD, True, OK, id="field-equals"),
        pytest.param(
            Health("version", "v3"), FIELD, False, "version is 'v2', want 'v3'", id="differs"
        ),
        pytest.param(
            Health("degraded", True), FIELD, False, "degraded is False, want True", id="want-true"
        ),
        pytest.param(
            Health("ready", False), FIELD, False, "ready is True, want False", id="want-false"
        ),
    ],
)
def test_judge_health(spec: Health, ans: Answer, ok: bool, detail: str) -> None:
    assert judge_health(spec, ans) == Attempt(ok, detail, ans.latency_ms)


LISTING = answer(200, ITEMS)


@pytest.mark.parametrize(
    ("spec", "ans", "ok", "detail"),
    [
        pytest.param(Scenario("widget"), LISTING, True, OK, id="contains"),
        pytest.param(Scenario("sprocket"), LISTING, False, "body lacks 'sprocket'", id="lacks"),
        pytest.param(
            Scenario(expect_json={"count": 2, "items.1.name": "gadget"}),
            LISTING,
            True,
            OK,
            id="json",
        ),
        pytest.param(
            Scenario(expect_json={"count": 3}),
            LISTING,
            False,
            "count is 2, want 3",
            id="json-differs",
        ),
        pytest.param(
            Scenario(expect_json={"items.5.name": "widget"}),
            LISTING,
            False,
            "items.5.name is missing, want 'widget'",
            id="json-missing",
        ),
        pytest.param(
            Scenario(expect_json={"count": 2}),
            answer(body=b"count: 2"),
            False,
            "count is missing, want 2",
            id="not-json",
        ),
        pytest.param(
            Scenario(expect_status=201), LISTING, False, "HTTP 200, want 201", id="status"
        ),
        pytest.param(
            Scenario("widget"), REFUSED, False, f"no answer: {REFUSED.error}", id="no-answer"
        ),
    ],
)
def test_judge_scenario(spec: Scenario, ans: Answer, ok: bool, detail: str) -> None:
    assert judge_scenario(spec, ans) == Attempt(ok, detail, ans.latency_ms)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("count", 2),
        ("items.0.name", "widget"),
        ("items.1", {"id": 2, "name": "gadget"}),
        ("meta.0", "zero"),  # a digit key in an object is a key, not an index
        ("items.2.name", _MISSING),
        ("items.-1.name", _MISSING),
        ("items.first", _MISSING),
        ("count.value", _MISSING),
        ("nothing", _MISSING),
    ],
)
def test_json_path(path: str, value: Any) -> None:
    assert json_path({**ITEMS, "meta": {"0": "zero"}}, path) == value


@pytest.mark.parametrize(
    ("current", "ok", "after"), [(0, True, 1), (2, True, 3), (2, False, 0), (0, False, 0)]
)
def test_streak_counts_consecutive_successes(current: int, ok: bool, after: int) -> None:
    assert streak(current, Attempt(ok, "", 1.0)) == after


@pytest.mark.parametrize(
    ("passed", "line"),
    [
        (True, "pass preview/version: HTTP 200 in 12 ms (3 attempts)"),
        (False, "FAIL preview/version: HTTP 200 in 12 ms (3 attempts)"),
    ],
)
def test_check_result_line(passed: bool, line: str) -> None:
    result = CheckResult("version", "preview", passed, "HTTP 200 in 12 ms", 3, 2.1)
    assert result.line() == line
