"""Health checks and smoke tests against a Service: through the Kubernetes API's service
proxy by default (nothing but the kubeconfig needed), or at an explicit URL."""

from __future__ import annotations

import time
import uuid
from functools import cache
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from bascule import kube as k
from bascule.checks import Answer, Attempt, CheckResult, judge_health, judge_scenario, streak
from bascule.config import HealthCheck, SmokeHttpScenario
from bascule.kube import KubeError
from bascule.manifests import Role, owned_labels, service_name, service_proxy_path
from bascule.redact import redact
from tasks.context import Env


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
def smoke_job(env: Env, role: Role, cluster_ip: str, release_id: str) -> CheckResult | None:
    """Runs the app's own smoke suite as a Job against the Service; its log goes in the report."""
    job_cfg = env.cfg.checks.smoke.job
    if job_cfg is None:
        return None
    port = env.templates.service["spec"]["ports"][0]["port"]
    name = f"{env.app}-smoke-{release_id[-12:]}-{uuid.uuid4().hex[:4]}".lower()
    container: dict[str, Any] = {
        "name": "smoke",
        "image": job_cfg.image,
        "args": job_cfg.args,
        "env": [{"name": "BASE_URL", "value": f"http://{cluster_ip}:{port}"}]
        + [{"name": key, "value": v} for key, v in job_cfg.env.items()]
        + _secret_env(env, job_cfg.secrets),
    }
    # The suite's image reaches the nodes as the app's does: its container's pull policy.
    app = env.templates.deployment["spec"]["template"]["spec"]["containers"][0]
    if "imagePullPolicy" in app:
        container["imagePullPolicy"] = app["imagePullPolicy"]
    if job_cfg.command:
        container["command"] = job_cfg.command
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": owned_labels(env.app),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": job_cfg.timeout_seconds,
            "ttlSecondsAfterFinished": 600,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }
    started = time.monotonic()
    env.kube.retrying(lambda: _create_job(env, job))
    try:
        passed, why = _wait_job(env, name, job_cfg.timeout_seconds + 30)
        log = _job_log(env, name)
    finally:
        env.kube.delete(k.jobs(env.ns, name))
    detail = why + ("\n" + redact(log) if log else "")
    return CheckResult("smoke-job", f"smoke/{role}", passed, detail, 1, time.monotonic() - started)


def _secret_env(env: Env, names: list[str]) -> list[dict[str, Any]]:
    """The suite's secret variables, read from the release's Secret like the app's."""
    secret = env.release_secret
    return [
        {"name": n, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": n}}}
        for n in names
        if secret is not None and n in secret.keys
    ]


def _create_job(env: Env, job: dict[str, Any]) -> None:
    try:
        env.kube.create(k.jobs(env.ns), job)
    except KubeError as exc:
        if exc.status != 409:
            raise
        # The name is this run's own: it exists because a try whose answer was lost landed.


def _wait_job(env: Env, name: str, timeout: float) -> tuple[bool, str]:
    deadline = env.kube.active_time() + timeout
    while env.kube.active_time() < deadline:
        status = env.kube.get(k.jobs(env.ns, name)).get("status", {})
        for cond in status.get("conditions", []):
            if cond["status"] == "True" and cond["type"] in ("Complete", "SuccessCriteriaMet"):
                return True, "the smoke Job completed"
            if cond["status"] == "True" and cond["type"] in ("Failed", "FailureTarget"):
                return (
                    False,
                    f"the smoke Job failed: {cond.get('reason')} {cond.get('message', '')}",
                )
        time.sleep(0.5)
    return False, f"the smoke Job did not finish in {timeout:.0f} s"


def _job_log(env: Env, name: str) -> str:
    pods = env.kube.get(k.pods(env.ns), labelSelector=f"job-name={name}")["items"]
    if not pods:
        return ""
    try:
        return env.kube.get_text(
            f"{k.pods(env.ns)}/{pods[0]['metadata']['name']}/log", tailLines="40"
        ).strip()
    except KubeError:
        return ""
