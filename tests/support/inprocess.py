"""The flows run in this process against a fake cluster (tests.support.fakecluster) and a
Prefect test server (``prefect.testing.utilities.prefect_test_harness``, on SQLite): no
Kubernetes cluster is needed.

``World`` is one test's staging environment: its configuration directory, written from the
repository's with waits shortened to what still exercises every step, and the fake cluster
its runs' clients talk to (``bascule.tasks.context.Kube`` is replaced for the test).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect import State
from prefect.testing.utilities import prefect_test_harness

import bascule.flows.deploy
import bascule.flows.recover
import bascule.flows.redeploy
import bascule.flows.rollback
import bascule.tasks.context
from bascule import history as h
from bascule.apps import overlay
from bascule.history import HISTORY_KEY
from bascule.kube import Kube, Target
from bascule.manifests import history_name
from bascule.tasks.context import Env
from tests.support.envs import write_envs
from tests.support.fakecluster import FakeCluster, cluster_kube

ENVIRONMENT, NAMESPACE, APP = "staging", "pipe", "sample-app"
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
# Each wait as short as still exercises its step: one verification round right after the
# switch, the old color retired at once, checks that pass on their first answer or fail
# within a second.
QUICK: dict[str, Any] = {
    "rollout": {
        "scale_down_delay_seconds": 0,
        "ready_timeout_seconds": 1,
        "unschedulable_grace_seconds": 0,
    },
    "verification": {"window_seconds": 0, "interval_seconds": 1},
    "checks": {
        "health": [
            {
                "name": "ready",
                "path": "/readyz",
                "successes": 1,
                "interval_seconds": 0.2,
                "timeout_seconds": 0.5,
            },
            {
                "name": "version",
                "path": "/version",
                "json_field": "version",
                "json_equals": "{image_tag}",
                "successes": 1,
                "interval_seconds": 0.2,
                "timeout_seconds": 0.5,
            },
        ],
        "smoke": {"http": [{"name": "items", "path": "/api/items"}]},
    },
}


@contextmanager
def prefect_in_process() -> Iterator[None]:
    """A Prefect API (a server on SQLite, in a subprocess) for the flows this process runs:
    its address is the process's setting while the context lasts."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class World:
    directory: Path  # where configurations are written
    api: FakeCluster
    config_dir: Path

    @staticmethod
    def make(directory: Path) -> World:
        world = World(directory, FakeCluster(NAMESPACE), directory / "cfg")
        world.configure({})
        return world

    def configure(self, over: dict[str, Any], name: str = "cfg") -> Path:
        """(Re)writes staging's configuration with ``over`` merged over QUICK."""
        self.config_dir = self.directory / name
        write_envs(
            self.config_dir,
            NAMESPACE,
            self.kubeconfig,
            overlay(QUICK, over),
            environments=(ENVIRONMENT,),
        )
        return self.config_dir

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def client(self, target: Target, outage_tolerance: float = 60.0) -> Kube:
        return cluster_kube(self.api, self.kubeconfig, outage_tolerance)

    # --- the flows, as `bascule` runs them in-process ------------------------------------------

    def deploy(self, image: str, **params: Any) -> State:
        return bascule.flows.deploy.deploy(
            environment=ENVIRONMENT,
            image=image,
            config_dir=str(self.config_dir),
            return_state=True,
            **params,
        )

    def rollback(self, **params: Any) -> State:
        return bascule.flows.rollback.rollback(
            environment=ENVIRONMENT, config_dir=str(self.config_dir), return_state=True, **params
        )

    def redeploy(self) -> State:
        return bascule.flows.redeploy.redeploy(
            environment=ENVIRONMENT, config_dir=str(self.config_dir), return_state=True
        )

    def recover(self) -> State:
        return bascule.flows.recover.recover(
            environment=ENVIRONMENT, config_dir=str(self.config_dir), return_state=True
        )

    def env(self) -> Env:
        """The environment as a run opens it (its client on the fake, once ``use``d)."""
        return Env.open(ENVIRONMENT, self.config_dir)

    # --- what tests read --------------------------------------------------------------------

    def history(self) -> list[h.Release]:
        cm = self.api.obj("configmaps", history_name(APP))
        return h.decode((cm or {}).get("data", {}).get(HISTORY_KEY))

    def active(self) -> str | None:
        return self.api.service_color(APP)

    def replicas(self, color: str) -> int | None:
        dep = self.api.obj("deployments", f"{APP}-{color}")
        return None if dep is None else int(dep["spec"]["replicas"])

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.api.objects)

    def restore(self, objects: dict[str, Any]) -> None:
        self.api.objects = copy.deepcopy(objects)
        self.api.actions.clear()
        # New versions follow the restored ones, as an API server's would.
        self.api.settle_versions()


def use(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """Makes every run's client talk to ``world``'s fake cluster."""
    monkeypatch.setattr(bascule.tasks.context, "Kube", world.client)
    return world
