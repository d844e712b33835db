"""The analysis gate's I/O: instant queries to Prometheus's HTTP API (/api/v1/query).
What a result means is bascule/analysis.py's decision."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bascule import analysis as a
from bascule.config import AnalysisConfig
from bascule.errors import OperationFailed
from bascule.tasks.context import Env


@cache
def _client() -> httpx.Client:
    return httpx.Client()


def query(base_url: str, promql: str, timeout: float) -> a.Sample:
    """One instant query: the values of its series, or why there are none."""
    try:
        resp = _client().get(
            base_url.rstrip("/") + "/api/v1/query", params={"query": promql}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return a.Sample(error=f"{type(exc).__name__}: {exc}", unreachable=True)
    if resp.status_code >= 500 and resp.status_code != 503:
        return a.Sample(error=f"HTTP {resp.status_code}", unreachable=True)
    try:
        body = resp.json()
    except ValueError:
        return a.Sample(error=f"HTTP {resp.status_code}: not JSON", unreachable=True)
    if body.get("status") != "success":
        # 400/422: the query is wrong; 503: Prometheus answered but cannot evaluate now.
        return a.Sample(
            error=f"{body.get('errorType', resp.status_code)}: {body.get('error', '')}",
            unreachable=resp.status_code == 503,
        )
    data = body["data"]
    if data["resultType"] == "scalar":
        return a.Sample((float(data["result"][1]),))
    if data["resultType"] == "vector":
        return a.Sample(tuple(float(s["value"][1]) for s in data["result"]))
    return a.Sample(error=f"a {data['resultType']} result: write an instant vector or scalar")


@dataclass(frozen=True)
class Passed:
    """What a gate saw when it let the release through."""

    detail: str
    evaluations: tuple[a.Evaluation, ...]


class VerificationFailed(OperationFailed):
    """A gate said no (the analysis, or the health checks of the window); carries every
    evaluation made so far, for the run's report."""

    def __init__(self, reason: str, evaluations: Sequence[a.Evaluation]) -> None:
        super().__init__(reason)
        self.evaluations = tuple(evaluations)


def evaluate_round(
    cfg: AnalysisConfig,
    phase: a.Phase,
    values: dict[str, str],
    so_far: list[a.Evaluation],
    log: Callable[[str], None],
) -> None:
    """Every query of ``phase`` once, added to ``so_far`` and logged; VerificationFailed
    when the gate fails with them."""
    for q in cfg.runs(phase):
        assert cfg.prometheus is not None  # runs() has queries only with an address
        promql = a.render(q.query, values)
        sample = query(cfg.prometheus, promql, cfg.timeout_seconds)
        verdict, detail = a.judge(
            sample, a.parse_condition(q.condition), cfg.no_data, cfg.unreachable
        )
        e = a.Evaluation(
            q.name, phase, promql, q.condition, sample.values, verdict, detail, time.time()
        )
        so_far.append(e)
        log(f"analysis {phase} {e.name} = {e.value}: {e.verdict} ({e.detail})")
    outcome = a.decide(so_far, cfg.failure_limit, cfg.inconclusive_limit)
    if outcome.failed:
        raise VerificationFailed(outcome.reason, so_far)


@task(name="analysis-preview", cache_policy=NO_CACHE)
def preview(env: Env, values: dict[str, str]) -> Passed:
    """The preview queries on the new color's pods before the switch,
    ``preview_evaluations`` times ``interval_seconds`` apart."""
    cfg = env.cfg.analysis
    evaluations: list[a.Evaluation] = []
    for i in range(cfg.preview_evaluations if cfg.runs("preview") else 0):
        if i:
            time.sleep(cfg.interval_seconds)
        evaluate_round(cfg, "preview", values, evaluations, get_run_logger().info)
    return Passed(a.summary(evaluations), tuple(evaluations))


def skipped(cfg: AnalysisConfig) -> str:
    """Why the gate does nothing in this environment, or "" when it runs."""
    if cfg.prometheus is None:
        return "skipped: no Prometheus address (analysis.prometheus)"
    if not cfg.queries:
        return "skipped: no queries (analysis.queries)"
    return ""
