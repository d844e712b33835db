"""The I/O of bascule.checks (which decides what a check result means): health checks and
smoke tests against a Service, through the Kubernetes API's service proxy by default (nothing
but the kubeconfig needed), or at an explicit URL."""

from __future__ import annotations

import time
import uuid
from functools import cache
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from bascule.checks import Answer, Attempt, CheckResult, judge_health, judge_scenario, streak
from bascule.config import HealthCheck, SmokeHttpScenario
from bascule.manifests import (
    Role,
    app_container,
    object_labels,
    restricted_context,
    service_host,
    service_name,
    service_proxy_path,
)
from bascule.redact import redact
from bascule.tasks import jobs
from bascule.tasks.context import Env


@cache
def _plain() -> httpx.Client:
    """For explicit URLs outside the API server; made on first use, not at import."""
    return httpx.Client(timeout=10)


def _request(
    env: Env,
    role: Role,
    target: HealthCheck | SmokeHttpScenario,
    timeout: float,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    started = time.perf_counter()
    try:
        if target.url:
            base = target.url.format(service=service_name(env.app, role), namespace=env.ns)
            url = base.rstrip("/") + target.path
            resp = _plain().request(method, url, headers=headers, json=body, timeout=timeout)
            seconds = time.perf_counter() - started
        else:
            # Waits out an API outage (up to its bound): no answer from a frozen API server
            # is not the app's failure, nor is the time it took to come back its latency.
            path = service_proxy_path(env.cfg, env.templates, role=role, path=target.path)
            resp, seconds = env.kube.proxy(
                method, path, timeout=timeout, headers=headers, json_body=body
            )
    except httpx.HTTPError as exc:
        ms = (time.perf_counter() - started) * 1000
        return Answer(None, ms, error=f"{type(exc).__name__}: {exc}")
    return Answer(resp.status_code, seconds * 1000, _redacted(resp.content))


def _redacted(body: bytes) -> bytes:
    """The app's answer with known secrets masked: check details quote it."""
    text = body.decode(errors="replace")
    masked = redact(text)
    return body if masked == text else masked.encode()


def run_check(env: Env, role: Role, check: HealthCheck, image: str, label: str) -> CheckResult:
    """Tries until ``successes`` consecutive answers pass or ``timeout_seconds`` run out."""
    spec = check.model_copy(update={"json_equals": check.expected_json(image)})
    started = time.monotonic()
    deadline = env.kube.active_time() + check.timeout_seconds
    run, attempts, last = 0, 0, Attempt(False, "not tried", 0.0)
    latencies: list[float] = []
    while True:
        attempts += 1
        last = judge_health(spec, _request(env, role, check, check.request_timeout_seconds))
        latencies.append(last.latency_ms)
        run = streak(run, last)
        if run >= check.successes:
            detail = f"{run} consecutive passes, last {last.detail}"
            return CheckResult(
                check.name, label, True, detail, attempts, time.monotonic() - started, latencies
            )
        if env.kube.active_time() + check.interval_seconds > deadline:
            return CheckResult(
                check.name,
                label,
                False,
                last.detail,
                attempts,
                time.monotonic() - started,
                latencies,
            )
        time.sleep(check.interval_seconds)


@task(name="health-checks", cache_policy=NO_CACHE)
def health_checks(env: Env, role: Role, image: str, label: str) -> list[CheckResult]:
    return [run_check(env, role, c, image, label) for c in env.cfg.checks.health]


def probe_once(env: Env, role: Role, image: str, label: str) -> list[CheckResult]:
    """Every health check once: one round of the post-switch analysis."""
    out = []
    for check in env.cfg.checks.health:
        spec = check.model_copy(update={"json_equals": check.expected_json(image)})
        a = judge_health(spec, _request(env, role, check, check.request_timeout_seconds))
        out.append(
            CheckResult(check.name, label, a.ok, a.detail, 1, a.latency_ms / 1000, [a.latency_ms])
        )
    return out


@task(name="smoke-http", cache_policy=NO_CACHE)
def smoke_http(env: Env, role: Role, image: str) -> list[CheckResult]:
    out = []
    for sc in env.cfg.checks.smoke.http:
        spec = sc.model_copy(update={"expect_json": sc.expected_json(image)})
        a = judge_scenario(
            spec, _request(env, role, sc, sc.timeout_seconds, sc.method, sc.body, sc.headers)
        )
        out.append(CheckResult(sc.name, f"smoke/{role}", a.ok, a.detail, 1, a.latency_ms / 1000))
    return out


@task(name="smoke-job", cache_policy=NO_CACHE)
def smoke_job(
    env: Env, role: Role, release_id: str, image: str | None = None
) -> CheckResult | None:
    """Runs the app's own smoke suite as a Job against the Service, which it reaches by name
    as any pod would; its log goes in the report. ``image``: the release's, that it tests."""
    job_cfg = env.cfg.checks.smoke.job
    if job_cfg is None:
        return None
    port = env.templates.service["spec"]["ports"][0]["port"]
    base_url = f"http://{service_host(env.app, role, env.ns)}:{port}"
    name = f"{env.app}-smoke-{release_id[-12:]}-{uuid.uuid4().hex[:4]}".lower()
    container: dict[str, Any] = {
        "name": "smoke",
        "image": job_cfg.image,
        "args": job_cfg.args,
        "env": [{"name": "BASE_URL", "value": base_url}]
        + [{"name": key, "value": v} for key, v in job_cfg.env.items()]
        + _secret_env(env, job_cfg.secrets),
        "securityContext": restricted_context(),
    }
    # The suite's image reaches the nodes as the app's does: its container's pull policy.
    app = app_container(
        env.templates.deployment["spec"]["template"]["spec"], env.cfg.workload.container
    )
    if "imagePullPolicy" in app:
        container["imagePullPolicy"] = app["imagePullPolicy"]
    if job_cfg.command:
        container["command"] = job_cfg.command
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": object_labels(env.app, env.name, image),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": job_cfg.timeout_seconds,
            "ttlSecondsAfterFinished": 600,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }
    started = time.monotonic()
    ran = jobs.run(env, job, "smoke Job", job_cfg.timeout_seconds + 30)
    detail = ran.why + ("\n" + ran.log if ran.log else "")
    return CheckResult(
        "smoke-job", f"smoke/{role}", ran.passed, detail, 1, time.monotonic() - started
    )


def _secret_env(env: Env, names: list[str]) -> list[dict[str, Any]]:
    """The suite's secret variables, read from the release's Secret like the app's."""
    secret = env.release_secret
    return [
        {"name": n, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": n}}}
        for n in names
        if secret is not None and n in secret.keys
    ]
