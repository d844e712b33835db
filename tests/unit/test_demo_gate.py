"""The demo's gate (scripts/demo-gate.sh, tests/support/gate.py): its configuration counts
missing data as a failure, and its check fails a run that was not decided on measured
values, on reports rendered by the real pure core."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bascule import analysis as a
from bascule.config_files import load_environment
from bascule.history import Release
from bascule.report import evaluation_row, render
from tests.support.envs import REPO
from tests.support.gate import evidence_problems, expected, summary, write_gated

WANTED = {
    ("preview", "all-scraped"),
    ("active", "error-ratio"),
    ("active", "latency-p95"),
}
CONDITIONS = {
    "all-scraped": "result == 2",
    "error-ratio": "result < 0.03",
    "latency-p95": "result < 0.2",
}
PASSED = Release(
    id="r20261206224528-77f2b1",
    image="bascule.local/sample-app:v3",
    color="blue",
    previous_image="bascule.local/sample-app:v2",
    previous_color="green",
    started="2026-12-06T22:45:28Z",
    phase="done",
    result="succeeded",
)
ROLLED_BACK = replace(
    PASSED,
    result="rolled-back",
    reason="post-switch verification failed: analysis 'error-ratio': 1 failed evaluation(s), "
    "more than 0 allowed; last: 0.087 does not meet result < 0.03",
)


def evaluation(
    phase: a.Phase, name: str, values: tuple[float, ...], no_data: a.Policy
) -> a.Evaluation:
    verdict, detail = a.judge(
        a.Sample(values), a.parse_condition(CONDITIONS[name]), no_data, "fail"
    )
    return a.Evaluation(name, phase, "promql", CONDITIONS[name], values, verdict, detail, 1.8e9)


def run(
    release: Release, measured: Sequence[tuple[a.Phase, str, tuple[float, ...]]], no_data: a.Policy
) -> tuple[dict[str, Any], list[dict[str, str]], str]:
    """A gated run as the check reads it: the history record, the table, the report."""
    evaluations = [evaluation(p, n, v, no_data) for p, n, v in measured]
    markdown = render("sample-app", "staging", release, [], evaluations=evaluations)
    return release.to_json(), [evaluation_row(e) for e in evaluations], markdown


GOOD: list[tuple[a.Phase, str, tuple[float, ...]]] = [
    ("preview", "all-scraped", (2.0,)),
    ("active", "error-ratio", (0.0,)),
    ("active", "latency-p95", (0.0048,)),
    ("active", "error-ratio", (0.01,)),
    ("active", "latency-p95", (0.0049,)),
]


def test_a_run_decided_on_measured_values_is_evidence() -> None:
    release, rows, markdown = run(PASSED, GOOD, "fail")
    assert evidence_problems(release, rows, markdown, WANTED) == []
    assert summary(rows) == [
        "preview all-scraped            1 evaluations: 2 … 2                 1 successful",
        "active  error-ratio            2 evaluations: 0 … 0.01              2 successful",
        "active  latency-p95            2 evaluations: 0.0048 … 0.0049       2 successful",
    ]


def test_a_run_that_passed_on_no_data_is_not() -> None:
    # The demo before: the policy `pass` let every evaluation without data through.
    nothing = [(phase, name, ()) for phase, name, _ in GOOD]
    release, rows, markdown = run(PASSED, nothing, "pass")
    assert {r["verdict"] for r in rows} == {"successful"}
    problems = evidence_problems(release, rows, markdown, WANTED)
    assert len(problems) == len(GOOD), problems
    assert "preview all-scraped at " in problems[0]
    assert "no value, counted successful (no data: counted as successful" in problems[0]
    assert summary(rows)[0].endswith("1 successful; 1 without a value")
    # One evaluation without data among measured ones is enough.
    one = [*GOOD[:3], ("active", "error-ratio", ()), GOOD[4]]
    release, rows, markdown = run(PASSED, one, "pass")
    [problem] = evidence_problems(release, rows, markdown, WANTED)
    assert problem.startswith("active error-ratio at ") and "no value" in problem


def test_a_query_never_evaluated_is_named() -> None:
    release, rows, markdown = run(PASSED, GOOD[1:], "fail")
    assert evidence_problems(release, rows, markdown, WANTED) == [
        "preview all-scraped: never evaluated"
    ]


def test_the_report_must_show_the_values_of_the_table() -> None:
    release, rows, markdown = run(PASSED, GOOD, "fail")
    [problem] = evidence_problems(release, rows, "# sample-app → staging", WANTED)
    assert problem.startswith("the report shows the values [], the table ['2', '0', ")
    assert evidence_problems(release, rows[:-1], markdown, WANTED) != []


def test_a_rollback_is_evidence_only_when_a_measured_evaluation_failed_the_gate() -> None:
    failing = [*GOOD[:3], ("active", "error-ratio", (0.087,)), ("active", "latency-p95", (0.005,))]
    release, rows, markdown = run(ROLLED_BACK, failing, "fail")
    assert evidence_problems(release, rows, markdown, WANTED) == []
    # Rolled back for want of data: the demo would show a rollback the metrics never asked for.
    empty = [*GOOD[:3], ("active", "error-ratio", ()), ("active", "latency-p95", (0.005,))]
    release, rows, markdown = run(ROLLED_BACK, empty, "fail")
    [problem] = evidence_problems(release, rows, markdown, WANTED)
    assert "no value, counted failed (no data: counted as failed (policy fail))" in problem
    # Rolled back by a health check while the gate saw nothing wrong.
    by_check = replace(ROLLED_BACK, reason="post-switch verification failed: ready: HTTP 503")
    release, rows, markdown = run(by_check, GOOD, "fail")
    assert evidence_problems(release, rows, markdown, WANTED) == [
        "rolled back, but not by the gate: post-switch verification failed: ready: HTTP 503"
    ]
    # And a release that succeeded despite a failed evaluation (a failure_limit) is no pass.
    release, rows, markdown = run(PASSED, failing, "fail")
    assert evidence_problems(release, rows, markdown, WANTED) == [
        "succeeded with 1 failed evaluation(s)"
    ]


def test_the_demo_gate_fails_on_missing_data_and_waits_for_the_scrape(tmp_path: Path) -> None:
    target = tmp_path / "good"
    write_gated(REPO / "deployments", target, "http://127.0.0.1:9090", {}, "demo-ns")
    cfg = load_environment(target / "staging.yaml")
    gate = cfg.analysis
    assert (cfg.namespace, gate.prometheus) == ("demo-ns", "http://127.0.0.1:9090")
    assert (gate.no_data, gate.unreachable, gate.failure_limit) == ("fail", "fail", 0)
    for q in gate.queries:
        condition = a.parse_condition(q.condition)
        assert a.judge(a.Sample(()), condition, gate.no_data, gate.unreachable)[0] == "failed"
        unreachable = a.Sample(error="ConnectError", unreachable=True)
        assert a.judge(unreachable, condition, gate.no_data, gate.unreachable)[0] == "failed"
    scraped = next(q for q in gate.queries if q.name == "all-scraped")
    assert scraped.condition == f"result == {cfg.replicas}" and scraped.phases == ["preview"]
    assert expected(gate.model_dump()) == {
        ("preview", "all-scraped"),
        ("active", "error-ratio"),
        ("active", "latency-p95"),
        ("active", "latency-vs-baseline"),
    }
    # The preview answers for 10 s before its analysis: Prometheus has found its pods by then.
    [ready] = cfg.checks.health
    assert (ready.successes - 1) * ready.interval_seconds >= 10
    assert cfg.checks.smoke.http == []
