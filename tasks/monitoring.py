"""Delivering a finished run to monitoring: its deployment metrics to the Pushgateway, its
alerts to Alertmanager. What is sent is built by ``bascule.monitoring``; this only sends it.

Nothing here fails a deploy: an endpoint left out of the configuration is skipped, one that
does not answer within ``monitoring.timeout_seconds`` is given up on, and either way the run's
log and report say what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.urls import url_for
from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bascule import history as h
from bascule import monitoring as m
from bascule.tasks import state
from bascule.tasks.context import Env

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class _Snapshot(Collector):
    """The series of one push, as prometheus_client's registry collects them."""

    def __init__(self, samples: Sequence[m.Series]) -> None:
        self.samples = samples

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for s in self.samples:
            family = families.get(s.name)
            if family is None:
                family = families[s.name] = GaugeMetricFamily(s.name, s.help, labels=list(s.labels))
            family.add_metric(list(s.labels.values()), s.value)
        return families.values()


def run_url(env: Env, release: h.Release) -> str | None:
    """The run's page in the Prefect UI, under ``monitoring.ui_url`` if set, else under the
    UI address Prefect knows (PREFECT_UI_URL, or derived from PREFECT_API_URL)."""
    if not release.flow_run_id:
        return None
    base = env.cfg.monitoring.ui_url
    if base:
        return f"{base}/runs/flow-run/{release.flow_run_id}"
    return url_for("flow-run", obj_id=release.flow_run_id)


def push_metrics(env: Env, release: h.Release) -> str:
    gateway = env.cfg.monitoring.pushgateway
    if gateway is None:
        return "metrics: skipped — no monitoring.pushgateway configured"
    history, _ = state.read_history(env)
    samples = m.series(h.upsert(history, release, len(history) + 1), release)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(samples))
    key = m.grouping_key(env.app, env.name)
    push_to_gateway(
        gateway,
        job=m.JOB,
        registry=registry,
        grouping_key=key,
        timeout=env.cfg.monitoring.timeout_seconds,
    )
    group = ", ".join(f"{k}={v}" for k, v in {"job": m.JOB, **key}.items())
    return f"metrics: {len(samples)} series pushed to {gateway} (group {group})"


def post_alerts(env: Env, release: h.Release, approval_timed_out: bool) -> str:
    manager = env.cfg.monitoring.alertmanager
    raised = m.alerts(
        env.app,
        env.name,
        release,
        approval_timed_out,
        run_url(env, release),
        time.time(),
        protected=env.cfg.protected,
    )
    names = ", ".join(f"{a['labels']['alertname']} ({a['labels']['severity']})" for a in raised)
    if manager is None:
        held = f" ({names} not sent)" if raised else ""
        return f"alerts: skipped — no monitoring.alertmanager configured{held}"
    if not raised:
        return "alerts: none raised"
    httpx.post(
        f"{manager}/api/v2/alerts", json=raised, timeout=env.cfg.monitoring.timeout_seconds
    ).raise_for_status()
    return f"alerts: {names} posted to {manager}"


@task(name="monitoring", cache_policy=NO_CACHE)
def deliver(env: Env, release: h.Release, approval_timed_out: bool = False) -> str:
    """Pushes the metrics and posts the alerts of a finished run; returns what happened, a
    line per endpoint, for the run's report. Never raises: a failed delivery is logged."""
    return delivered(env, release, approval_timed_out, get_run_logger())


def delivered(env: Env, release: h.Release, approval_timed_out: bool, log: Logger) -> str:
    cfg = env.cfg.monitoring
    lines = []
    senders: tuple[tuple[str, str | None, Callable[[], str]], ...] = (
        ("metrics", cfg.pushgateway, lambda: push_metrics(env, release)),
        ("alerts", cfg.alertmanager, lambda: post_alerts(env, release, approval_timed_out)),
    )
    for what, endpoint, send in senders:
        try:
            line = send()
            log.info(line)
        except Exception as exc:  # monitoring must never fail the deploy it reports on
            line = f"{what}: not delivered to {endpoint} — {type(exc).__name__}: {exc}"
            log.warning(line)
        lines.append(line)
    return "\n".join(lines)
