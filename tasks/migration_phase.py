"""Runs one phase's migrations with the environment's runner: ``process`` (bascule/migrator.py
in this process) or ``job`` (the same file, mounted from a ConfigMap into a Job that runs the
new image's python3 against the revisions in that image). The database URL reaches the Job
through a Secret of its own, deleted with it; no message carries it."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from bascule import kube as k
from bascule import migrator
from bascule.config import MigrationsConfig
from bascule.dns import unresolved_hint
from bascule.errors import OperationFailed, UsageError
from bascule.manifests import app_container, object_labels, restricted_context
from bascule.tasks import jobs
from bascule.tasks.context import Env
from bascule.tasks.migration_plan import database_url

MOUNT = "/bascule"
SCRIPT = "migrator.py"
URL_KEY = "url"
LOG_LINES = 200  # Alembic logs a few lines per revision; the result is the last line


class MigrationFailed(OperationFailed):
    def __init__(self, result: migrator.Result, phase: str) -> None:
        self.result = result
        where = f"revision {result.failed_revision}" if result.failed_revision else "the run"
        text = f"{phase} migration failed in {where}: {result.error}"
        if result.statement:
            text += f" — statement: {result.statement}"
        text += (
            f" (database left at {result.after or 'base'}; nothing is downgraded — fix the "
            "revision or what blocked it, then deploy again)"
        )
        super().__init__(text)


def _config(env: Env) -> MigrationsConfig:
    if env.cfg.migrations is None:
        raise UsageError(f"{env.name}: no migrations section")
    return env.cfg.migrations


def settings(cfg: MigrationsConfig, target: str, label: str) -> migrator.Settings:
    """What the runner needs; the job runner's paths are those inside the image."""
    in_image = cfg.runner == "job"
    location = None if in_image or cfg.script_location is None else str(cfg.script_location)
    return migrator.Settings(
        alembic_ini=cfg.job.alembic_ini if in_image else str(cfg.alembic_ini),
        ini_section=cfg.ini_section,
        script_location=location,
        target=target,
        lock_timeout_ms=cfg.lock_timeout_ms,
        statement_timeout_ms=cfg.statement_timeout_ms,
        advisory_lock_wait_seconds=cfg.advisory_lock_wait_seconds,
        lock_retry_seconds=cfg.lock_retry_seconds,
        version_table=cfg.version_table,
        label=label,
        url_variable=cfg.url_variable,
    )


def upgrade(env: Env, image: str, target: str, label: str) -> migrator.Result:
    """Upgrades to ``target`` (the plan's target of a phase); never raises for a failed
    migration, the result says it."""
    cfg = _config(env)
    url = database_url(cfg)
    wanted = settings(cfg, target, label)
    if cfg.runner == "process":
        return migrator.run(url, wanted)
    return in_job(env, image, url, wanted)


def current_in_job(env: Env, image: str, label: str) -> str | None:
    """The database's revision, read by a Job: for a database only the cluster reaches."""
    cfg = _config(env)
    result = in_job(env, image, database_url(cfg), settings(cfg, "current", label))
    if not result.ok:
        raise OperationFailed(f"reading the database's revision in a Job: {result.error}")
    return result.before


def in_job(env: Env, image: str, url: str, wanted: migrator.Settings) -> migrator.Result:
    cfg = _config(env)
    mask = migrator.Masker(url)
    name = f"{env.app}-migrate-{wanted.label[-12:]}-{uuid.uuid4().hex[:4]}".lower().strip("-")
    meta = {"name": name, "labels": object_labels(env.app, env.name, image)}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {URL_KEY: url}}
    script = Path(migrator.__file__).read_text()
    runner = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {SCRIPT: script}}
    env.kube.retrying(lambda: jobs.create(env, k.secrets(env.ns), secret))
    try:
        env.kube.retrying(lambda: jobs.create(env, k.configmaps(env.ns), runner))
        ran = jobs.run(
            env,
            _job(env, name, image, wanted),
            "migration Job",
            cfg.job.timeout_seconds + 30,
            LOG_LINES,
        )
    finally:
        env.kube.delete(k.secrets(env.ns, name))
        env.kube.delete(k.configmaps(env.ns, name))
    for line in reversed(ran.log.splitlines()):
        if line.startswith(migrator.RESULT_MARKER):
            data = json.loads(line.removeprefix(migrator.RESULT_MARKER))
            result = migrator.Result.from_json(data)
            hint = None if result.ok else unresolved_hint(result.error)
            return replace(result, error=f"{result.error} — {hint}") if hint else result
    tail = mask("\n".join(ran.log.splitlines()[-10:]))
    return migrator.Result(
        False, wanted.target, kind="error", error=f"{ran.why}; no result in its log: {tail}"
    )


def _job(env: Env, name: str, image: str, wanted: migrator.Settings) -> dict[str, Any]:
    cfg = _config(env)
    container: dict[str, Any] = {
        "name": "migrate",
        "image": image,
        "command": ["python3", f"{MOUNT}/{SCRIPT}", *wanted.argv()],
        "env": [
            {
                "name": wanted.url_variable,
                "valueFrom": {"secretKeyRef": {"name": name, "key": URL_KEY}},
            }
        ],
        "volumeMounts": [{"name": "runner", "mountPath": MOUNT, "readOnly": True}],
        "securityContext": restricted_context(),
    }
    # The new image reaches the nodes as the app's does: its container's pull policy.
    app = app_container(
        env.templates.deployment["spec"]["template"]["spec"], env.cfg.workload.container
    )
    if "imagePullPolicy" in app:
        container["imagePullPolicy"] = app["imagePullPolicy"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": object_labels(env.app, env.name, image)},
        "spec": {
            "backoffLimit": 0,  # a migration is never retried blindly
            "activeDeadlineSeconds": cfg.job.timeout_seconds,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "runner", "configMap": {"name": name}}],
                },
            },
        },
    }
