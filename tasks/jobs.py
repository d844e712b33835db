"""One Kubernetes Job run to its end: create, wait, read its log, delete. The smoke suite
and the migration Job both run this way."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bascule import kube as k
from bascule.dns import unresolved_hint
from bascule.kube import KubeError
from bascule.redact import redact
from bascule.tasks.context import Env


@dataclass(frozen=True)
class JobRun:
    passed: bool
    why: str
    log: str


def run(env: Env, job: dict[str, Any], what: str, timeout: float, tail_lines: int = 40) -> JobRun:
    """Runs ``job`` (``what`` names it in messages) and deletes it, whatever happened."""
    name = job["metadata"]["name"]
    env.kube.retrying(lambda: create(env, k.jobs(env.ns), job))
    try:
        passed, why = wait(env, name, what, timeout)
        text = log(env, name, tail_lines)
        hint = None if passed else unresolved_hint(text)
        if hint:
            why = f"{why} — {hint}"
        # Job output is the app's: it may print a secret value.
        return JobRun(passed, redact(why), redact(text))
    finally:
        env.kube.delete(k.jobs(env.ns, name))


def create(env: Env, path: str, body: dict[str, Any]) -> None:
    """Creates an object of this run's own (a name no one else uses)."""
    try:
        env.kube.create(path, body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        # The name is this run's own: it exists because a try whose answer was lost landed.


def wait(env: Env, name: str, what: str, timeout: float) -> tuple[bool, str]:
    deadline = env.kube.active_time() + timeout
    while env.kube.active_time() < deadline:
        status = env.kube.get(k.jobs(env.ns, name)).get("status", {})
        for cond in status.get("conditions", []):
            if cond["status"] == "True" and cond["type"] in ("Complete", "SuccessCriteriaMet"):
                return True, f"the {what} completed"
            if cond["status"] == "True" and cond["type"] in ("Failed", "FailureTarget"):
                return False, f"the {what} failed: {cond.get('reason')} {cond.get('message', '')}"
        time.sleep(0.5)
    return False, f"the {what} did not finish in {timeout:.0f} s"


def log(env: Env, name: str, tail_lines: int) -> str:
    pods = env.kube.get(k.pods(env.ns), labelSelector=f"job-name={name}")["items"]
    if not pods:
        return ""
    try:
        return env.kube.get_text(
            f"{k.pods(env.ns)}/{pods[0]['metadata']['name']}/log", tailLines=str(tail_lines)
        ).strip()
    except KubeError:
        return ""
