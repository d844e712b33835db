"""Judging HTTP answers against health checks and smoke scenarios. Pure functions: the
requests themselves are made by tasks/checks.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


# Read-only properties, so frozen models (bascule.config) satisfy them.
class HealthSpec(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def expect_status(self) -> int: ...
    @property
    def json_field(self) -> str | None: ...
    @property
    def json_equals(self) -> Any: ...
    @property
    def max_latency_ms(self) -> int | None: ...


class ScenarioSpec(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def expect_status(self) -> int: ...
    @property
    def expect_body_contains(self) -> str | None: ...
    @property
    def expect_json(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange as seen by the checker: status None means no answer at all."""

    status: int | None
    latency_ms: float
    body: bytes = b""
    error: str | None = None


@dataclass(frozen=True)
class Attempt:
    ok: bool
    detail: str
    latency_ms: float


@dataclass(frozen=True)
class CheckResult:
    name: str
    target: str  # "baseline", "preview", "active"
    passed: bool
    detail: str
    attempts: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    def line(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        return f"{mark} {self.target}/{self.name}: {self.detail} ({self.attempts} attempts)"


_MISSING = object()


def json_path(data: Any, dotted: str) -> Any:
    """Value at ``a.b.0.c`` in parsed JSON, or _MISSING."""
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isascii() and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _MISSING


def judge_health(spec: HealthSpec, ans: Answer) -> Attempt:
    if ans.status is None:
        return Attempt(False, f"no answer: {ans.error}", ans.latency_ms)
    if ans.status != spec.expect_status:
        return Attempt(False, f"HTTP {ans.status}, want {spec.expect_status}", ans.latency_ms)
    if spec.max_latency_ms is not None and ans.latency_ms > spec.max_latency_ms:
        return Attempt(
            False, f"{ans.latency_ms:.0f} ms, limit {spec.max_latency_ms} ms", ans.latency_ms
        )
    if spec.json_field:
        value = json_path(_parse(ans.body), spec.json_field)
        if value is _MISSING:
            return Attempt(False, f"no JSON field {spec.json_field!r}", ans.latency_ms)
        if spec.json_equals is not None and value != spec.json_equals:
            return Attempt(
                False, f"{spec.json_field} is {value!r}, want {spec.json_equals!r}", ans.latency_ms
            )
    return Attempt(True, f"HTTP {ans.status} in {ans.latency_ms:.0f} ms", ans.latency_ms)


def judge_scenario(spec: ScenarioSpec, ans: Answer) -> Attempt:
    if ans.status is None:
        return Attempt(False, f"no answer: {ans.error}", ans.latency_ms)
    if ans.status != spec.expect_status:
        return Attempt(False, f"HTTP {ans.status}, want {spec.expect_status}", ans.latency_ms)
    text = ans.body.decode(errors="replace")
    if spec.expect_body_contains and spec.expect_body_contains not in text:
        return Attempt(False, f"body lacks {spec.expect_body_contains!r}", ans.latency_ms)
    for path, want in (spec.expect_json or {}).items():
        got = json_path(_parse(ans.body), path)
        if got is _MISSING or got != want:
            shown = "missing" if got is _MISSING else repr(got)
            return Attempt(False, f"{path} is {shown}, want {want!r}", ans.latency_ms)
    return Attempt(True, f"HTTP {ans.status} in {ans.latency_ms:.0f} ms", ans.latency_ms)


def streak(current: int, attempt: Attempt) -> int:
    """Consecutive successes after ``attempt``: a failure starts the count again."""
    return current + 1 if attempt.ok else 0
