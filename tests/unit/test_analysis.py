"""The analysis gate's pure decisions, its configuration, its report, and the Prometheus
answer parsing (against a local HTTP server that answers as Prometheus's API does)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bascule import analysis as a
from bascule import report
from bascule.analysis import Sample, Verdict
from bascule.config import ConfigError, describe_schema
from bascule.config_files import load_environment
from bascule.history import Release
from bascule.tasks import analysis as task
from tests.support.signers import listing_nobody

# --- conditions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "true_for", "false_for"),
    [
        ("result < 0.01", [0.0, 0.009], [0.01, 1]),
        ("result <= 0.3", [0.3], [0.31]),
        ("result >= 1", [1, 2], [0.99]),
        ("result == 1", [1.0], [0, 2]),
        ("result != 0", [1], [0]),
        # Written the other way round: each operator flipped, its boundary on the right side.
        ("0.5 < result", [0.6], [0.5, 0.4]),
        ("0.5 <= result", [0.5, 0.6], [0.4]),
        ("0.5 > result", [0.4], [0.5, 0.6]),
        ("0.5 >= result", [0.5, 0.4], [0.6]),
        ("1 == result", [1], [0.5, 2]),
        ("0 != result", [1, -1], [0]),
        ("0.5 <= result and 2 >= result", [0.5, 1, 2], [0.4, 2.1]),
        ("result >= 0.5 and result <= 2", [0.5, 1, 2], [0.4, 2.1]),
        ("result < 1e-3", [0.0001], [0.01]),
        ("  result>-1  ", [0], [-2]),
    ],
)
def test_conditions_compare_the_result(
    text: str, true_for: list[float], false_for: list[float]
) -> None:
    cond = a.parse_condition(text)
    assert all(cond.holds(v) for v in true_for)
    assert not any(cond.holds(v) for v in false_for)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "result",
        "result < ",
        "result < x",
        "__import__('os').system('true')",
        "result < 0.01 or result > 2",
        "len(result) < 1",
        "result < 0.01 and",
        "result => 1",
    ],
)
def test_anything_else_is_refused_with_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="write `result OP NUMBER`"):
        a.parse_condition(text)


def test_a_refusal_names_the_part_that_is_not_a_comparison() -> None:
    with pytest.raises(ValueError) as info:
        a.parse_condition("result < 1 and result ~ 2")
    assert str(info.value) == (
        "'result ~ 2' is not a comparison — write `result OP NUMBER` with OP one of "
        "<=, >=, ==, !=, <, >, joined by `and`, e.g. `result < 0.01`"
    )
    with pytest.raises(ValueError, match=r"^'result < 1 and ' is not a comparison"):
        a.parse_condition("result < 1 and ")  # an empty part: the whole text is named


def test_a_condition_keeps_its_text_for_the_report() -> None:
    assert a.parse_condition("  result < 1 ").text == "result < 1"


# --- placeholders --------------------------------------------------------------------------------


def test_placeholders_are_filled_and_promql_braces_left_alone() -> None:
    query = 'sum(rate(x{namespace="{namespace}",color="{old_color}",code=~"5.."}[1m]))'
    assert a.unknown_placeholders(query) == []
    out = a.render(query, {"namespace": "shop", "old_color": "blue"})
    assert out == 'sum(rate(x{namespace="shop",color="blue",code=~"5.."}[1m]))'
    assert a.unknown_placeholders('x{ns="{nmespace}"}') == ["nmespace"]
    # Every documented placeholder gets a value; a first deploy has no baseline.
    first = a.placeholders("shop", "web", "dev", "green", "r1", None, None)
    assert first.keys() == a.PLACEHOLDERS.keys() and first["old_color"] == ""
    assert first["old_release"] == ""
    later = a.placeholders("shop", "web", "dev", "green", "r2", "blue", "r1")
    assert (later["old_color"], later["old_release"], later["release"]) == ("blue", "r1", "r2")


# --- verdicts ------------------------------------------------------------------------------------

LOW = a.parse_condition("result < 0.05")


def test_every_series_must_meet_the_condition() -> None:
    assert a.judge(Sample((0.01, 0.02)), LOW, "fail", "fail")[0] is Verdict.SUCCESSFUL
    verdict, detail = a.judge(Sample((0.01, 0.1)), LOW, "pass", "pass")
    assert verdict is Verdict.FAILED and "0.1 does not meet result < 0.05" in detail


@pytest.mark.parametrize(
    ("policy", "verdict"),
    [
        ("fail", Verdict.FAILED),
        ("pass", Verdict.SUCCESSFUL),
        ("inconclusive", Verdict.INCONCLUSIVE),
    ],
)
def test_no_data_and_unreachable_follow_their_policies(policy: a.Policy, verdict: Verdict) -> None:
    for empty in (Sample(()), Sample((math.nan,))):  # 0/0 with no traffic is NaN
        got, detail = a.judge(empty, LOW, policy, "fail")
        assert got is verdict and f"no data: counted as {verdict} (policy {policy})" in detail
    down = Sample(error="ConnectError: refused", unreachable=True)
    got, detail = a.judge(down, LOW, "fail", policy)
    assert got is verdict and detail.startswith("Prometheus unreachable: ConnectError")


def test_a_query_prometheus_refuses_fails_whatever_the_policies() -> None:
    bad = Sample(error="bad_data: parse error")
    assert a.judge(bad, LOW, "pass", "pass")[0] is Verdict.FAILED


# --- the gate ------------------------------------------------------------------------------------


def ev(name: str, verdict: Verdict) -> a.Evaluation:
    return a.Evaluation(name, "active", "q", "result < 1", (), verdict, f"{name} {verdict}", 0.0)


def test_the_gate_fails_past_the_failure_limit_of_one_query() -> None:
    ok, bad = ev("errors", Verdict.SUCCESSFUL), ev("errors", Verdict.FAILED)
    assert not a.decide([ok, bad], failure_limit=1, inconclusive_limit=0).failed
    out = a.decide([ok, bad, ok, bad], failure_limit=1, inconclusive_limit=0)
    assert out.failed and "'errors': 2 failed evaluation(s), more than 1 allowed" in out.reason
    assert out.reason.endswith("last: errors failed")
    # Limits count per query: one failure each of two queries is within a limit of one.
    assert not a.decide([bad, ev("latency", Verdict.FAILED)], 1, 0).failed
    assert a.decide([bad], 0, 0).failed  # Argo's default: the first failure


def test_the_gate_fails_past_the_inconclusive_limit() -> None:
    maybe = ev("errors", Verdict.INCONCLUSIVE)
    assert not a.decide([maybe, maybe], failure_limit=0, inconclusive_limit=2).failed
    out = a.decide([maybe, maybe, maybe], failure_limit=0, inconclusive_limit=2)
    assert out.failed and "3 inconclusive" in out.reason
    assert a.decide([ev("x", Verdict.SUCCESSFUL)] * 50, 0, 0) == a.GateOutcome(False)


def test_the_summary_counts_each_verdict_in_a_fixed_order() -> None:
    ok, bad = ev("errors", Verdict.SUCCESSFUL), ev("errors", Verdict.FAILED)
    assert a.summary([bad, ok, ok, ev("x", Verdict.INCONCLUSIVE)]) == (
        "2 successful, 1 failed, 1 inconclusive"
    )
    assert a.summary([bad]) == "1 failed"
    assert a.summary([]) == "no evaluations"


# --- configuration -------------------------------------------------------------------------------

BASE = "app: shop\nenvironment: {env}\nnamespace: shop-{env}\n"
GATE = """\
analysis:
  prometheus: http://127.0.0.1:9090
  interval_seconds: 1
  queries:
    - name: error-ratio
      query: 'sum(rate(http_requests_total{{namespace="{{namespace}}",code=~"5.."}}[1m]))'
      condition: result < 0.01
    - name: up
      query: min(up)
      condition: result == 1
      phases: [preview, active]
"""


def load(tmp: Path, text: str, env: str = "staging") -> Any:
    path = tmp / f"{env}.yaml"
    path.write_text(BASE.format(env=env) + text)
    return load_environment(path)


def test_a_gate_loads_and_says_where_each_query_runs(tmp_path: Path) -> None:
    cfg = load(tmp_path, GATE.format()).analysis
    assert [q.name for q in cfg.runs("active")] == ["error-ratio", "up"]
    assert [q.name for q in cfg.runs("preview")] == ["up"]
    assert (cfg.no_data, cfg.unreachable) == ("pass", "pass")
    assert (cfg.failure_limit, cfg.inconclusive_limit) == (0, 0)
    assert cfg.queries[0].query.count("{namespace}") == 1


def test_without_an_address_nothing_runs(tmp_path: Path) -> None:
    text = GATE.format().replace("  prometheus: http://127.0.0.1:9090\n", "")
    cfg = load(tmp_path, text).analysis
    assert cfg.runs("active") == [] and cfg.runs("preview") == []
    assert task.skipped(cfg) == "skipped: no Prometheus address (analysis.prometheus)"
    assert task.skipped(load(tmp_path, "").analysis).startswith("skipped: no Prometheus")


def test_production_fails_what_it_cannot_evaluate_unless_told_otherwise(tmp_path: Path) -> None:
    signed = listing_nobody(tmp_path)  # production is protected: it needs approvers
    cfg = load(tmp_path, signed, "production").analysis
    assert (cfg.no_data, cfg.unreachable) == ("fail", "fail")
    cfg = load(tmp_path, GATE.format() + "  unreachable: pass\n" + signed, "production").analysis
    assert (cfg.no_data, cfg.unreachable) == ("fail", "pass")


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("condition: result < 0.01", "condition: result ~ 1", "condition", "result OP NUMBER"),
        ('"{{namespace}}"', '"{{nmspace}}"', "query", "unknown placeholder {nmspace}"),
        ("http://127.0.0.1:9090", "127.0.0.1:9090", "prometheus", "not an http(s) URL"),
        ("[preview, active]", "[canary]", "phases", "'preview' or 'active'"),
        ("name: up", "name: error-ratio", "name", "duplicate name 'error-ratio'"),
    ],
)
def test_mistakes_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    text = GATE.replace(old, new).format()
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    problem = info.value.problems[0]
    lines = (BASE.format(env="staging") + text).splitlines()
    expected_line = max(i for i, line in enumerate(lines, 1) if new.format() in line)
    assert problem.mark is not None and problem.mark.line == expected_line, problem
    assert field in problem.field and message in problem.message, problem


def test_the_schema_documents_the_section() -> None:
    lines = "\n".join(describe_schema())
    for key in (
        "analysis.prometheus",
        "analysis.queries[].condition",
        "analysis.queries[].phases",
        "analysis.failure_limit",
        "analysis.no_data",
        "checks.smoke.after_switch",
    ):
        assert f"\n{key} (" in lines, key
    assert "{old_release}" in lines and "fail for a protected environment" in lines


# --- the report ----------------------------------------------------------------------------------


def test_the_report_shows_each_evaluation_or_why_there_is_none() -> None:
    release = Release(
        id="r1",
        image="shop:v2",
        color="green",
        previous_image=None,
        previous_color=None,
        started="2026-01-01T00:00:00Z",
        kind="deploy",
    )
    e = a.Evaluation(
        "errors", "active", 'x{a="b"} | y', "result < 1", (0.5,), Verdict.FAILED, "bad", 0.0
    )
    md = report.render("shop", "staging", release, [], evaluations=[e])
    row = next(line for line in md.splitlines() if "errors" in line)
    assert "1970-01-01T00:00:00.000+00:00" in row and "**failed**" in row and "| 0.5 |" in row
    assert 'x{a="b"} \\| y' in row  # the pipe would split the cell
    md = report.render("shop", "staging", release, [], analysis_skipped="skipped: no address")
    assert "## Analysis: skipped: no address" in md


# --- Prometheus's answers ------------------------------------------------------------------------


@pytest.fixture
def prom() -> Iterator[tuple[str, list[tuple[int, Any]]]]:
    """A loopback server answering /api/v1/query with the queued (status, body) pairs."""
    answers: list[tuple[int, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.pop(0)
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()


def ok(result_type: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def test_answers_become_samples(prom: tuple[str, list[tuple[int, Any]]]) -> None:
    url, answers = prom
    answers += [
        (200, ok("vector", [{"metric": {}, "value": [1, "0.25"]}, {"value": [1, "NaN"]}])),
        (200, ok("scalar", [1, "3"])),
        (200, ok("vector", [])),
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
        (503, {"status": "error", "errorType": "unavailable", "error": "starting"}),
        (502, "<html>bad gateway</html>"),
        (200, ok("matrix", [])),
    ]
    got = [task.query(url, "q", 2) for _ in range(7)]
    assert got[0].values[0] == 0.25 and math.isnan(got[0].values[1])
    assert got[1] == Sample((3.0,)) and got[2] == Sample(())
    assert got[3] == Sample(error="bad_data: parse error", unreachable=False)
    assert got[4].unreachable and got[5].unreachable
    assert got[6].error is not None and "matrix" in got[6].error
    down = task.query("http://127.0.0.1:9", "q", 1)  # nothing listens on port 9
    assert down.unreachable and down.error is not None
