"""What every task of a run needs: the environment's configuration, its templates and a
client for its cluster. Created once per flow run and passed to the tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bascule import kube as k
from bascule.apps import choose_app
from bascule.config import DEFAULT_CONFIG_DIR as DEFAULT_CONFIG_DIR
from bascule.config import EnvironmentConfig, environment_file
from bascule.config_files import app_names, load_environment
from bascule.history import Release
from bascule.kube import Kube
from bascule.manifest_sources import load_workload
from bascule.manifests import (
    ReleaseSecret,
    Role,
    Templates,
    deployment_name,
    history_name,
    lease_name,
    release_secret,
    service_name,
)
from bascule.vocabulary import Color
from bascule.workload import Workload, classify, from_templates


@dataclass
class Env:
    cfg: EnvironmentConfig
    templates: Templates
    kube: Kube
    # The app's secret variables with their values, once a flow resolved them (tasks.secretref).
    secrets: dict[str, str] = field(default_factory=dict)
    # What the run does once its deploy lock is released (its report and notifications).
    after_unlock: list[Callable[[], None]] = field(default_factory=list)
    # The history ConfigMap as the run last read or wrote it (tasks.state): a write's first
    # try carries its resourceVersion instead of reading it again.
    history_seen: dict[str, Any] | None = None
    # Every release Secret a history this run read named (tasks.state.read_history): what
    # it prunes by name, as Secrets are never listed (a list would read them all).
    secrets_seen: set[str] = field(default_factory=set)
    # The release in flight that this run's preflight put right (tasks.preflight.reconcile),
    # as recorded then.
    reconciled: Release | None = None
    # Whose live lock this run broke, and why (tasks.lock.deploy_lock): for the history.
    lock_broken: str | None = None
    # A rollback's that redeploys a release's stored objects: that release's Secret, which
    # they read, rather than one of today's values (bascule.snapshots).
    stored_secret: ReleaseSecret | None = None
    # The key this worker signs the run's succeeded release with (tasks.promotion.evidence_key).
    evidence_key: Path | None = None
    # RBAC refused a Kubernetes Event (tasks.kubeevents): the run tries no other.
    events_refused: bool = False
    # The app's rendered objects, sorted (bascule.workload); unset: the templates' two.
    objects: Workload | None = None

    @staticmethod
    def open(
        environment: str, config_dir: str | Path = DEFAULT_CONFIG_DIR, app: str | None = None
    ) -> Env:
        """The environment for ``app`` (default: the environment file's own app)."""
        if app is not None:
            choose_app(environment, app, app_names(config_dir, environment))
        path = environment_file(config_dir, environment)
        cfg = load_environment(path, app)
        workload = load_workload(cfg, str(path))
        target = k.Target(
            str(cfg.kube.kubeconfig) if cfg.kube.kubeconfig else None, cfg.kube.context
        )
        kube = Kube(target, outage_tolerance=cfg.kube.outage_tolerance_seconds)
        return Env(cfg, workload.templates, kube, objects=workload)

    @property
    def workload(self) -> Workload:
        if self.objects is None:
            self.objects = classify(from_templates(self.templates), self.cfg.workload)
        return self.objects

    @property
    def ns(self) -> str:
        return self.cfg.namespace

    @property
    def app(self) -> str:
        return self.cfg.app

    @property
    def name(self) -> str:
        return self.cfg.environment

    def deployment(self, color: Color) -> str:
        return k.deployments(self.ns, deployment_name(self.app, color))

    def service(self, role: Role) -> str:
        return k.services(self.ns, service_name(self.app, role))

    @property
    def release_secret(self) -> ReleaseSecret | None:
        """The Secret a release with today's secret values reads, or the stored one."""
        return self.stored_secret or release_secret(self.app, self.secrets)

    @property
    def history_name(self) -> str:
        return history_name(self.app)

    @property
    def history_map(self) -> str:
        return k.configmaps(self.ns, self.history_name)

    @property
    def lease(self) -> str:
        return k.leases(self.ns, lease_name(self.app))
