"""Argo's counterpart of bench/gate.py: a blue-green postPromotionAnalysis with an
AnalysisTemplate (Prometheus provider) running the error-ratio query of Bascule's gate, the
query that catches the bad version, evaluated every second against the same Prometheus
setup. The bad version's pods answer 10% errors 9 s after they start, as in bench/gate.py;
from the first error a client saw until only the good version answers again (the load
driver's view), after Argo aborts and switches the active Service back to the stable pods.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bascule.config import EnvironmentConfig
from bascule.config_files import load_environment
from bascule.manifests import LABEL_RELEASE
from bench.argo.rollouts import (
    Argo,
    forget_identities,
    identity,
    install_crds,
    rollout_objects,
    running_controller,
)
from bench.argo.watch import RolloutWatch
from tests.support.cluster import Cluster
from tests.support.deploys import service_url
from tests.support.envs import write_envs
from tests.support.gate import ERROR_RATIO

TEMPLATE = "error-ratio"
WINDOW = 16  # evaluations, as bench/gate.py's verification window of 16 s at 1 s


def analysis_template(
    cfg_namespace: str, app: str, prometheus: str, interval: float
) -> dict[str, Any]:
    query = (
        ERROR_RATIO.replace("{namespace}", cfg_namespace)
        .replace("{app}", app)
        .replace("{release}", "{{args.release}}")
    )
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": TEMPLATE},
        "spec": {
            "args": [{"name": "release"}],
            "metrics": [
                {
                    "name": TEMPLATE,
                    "interval": f"{interval:g}s",
                    "count": WINDOW,
                    "failureLimit": 0,
                    # No answer yet (no traffic scraped) is no failure, as for Bascule's gate.
                    "failureCondition": "len(result) > 0 && result[0] >= 0.03",
                    "provider": {"prometheus": {"address": prometheus, "query": query}},
                }
            ],
        },
    }


def gated(objects: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    """The Rollout's pods labelled ``release`` (Prometheus labels their series with it) and
    its promotion followed by the analysis of that release."""
    rollout = objects[-1]
    rollout["spec"]["template"]["metadata"]["labels"][LABEL_RELEASE] = release
    rollout["spec"]["strategy"]["blueGreen"]["postPromotionAnalysis"] = {
        "templates": [{"templateName": TEMPLATE}],
        "args": [{"name": "release", "value": release}],
    }
    return objects


@dataclass
class ArgoGate:
    """Argo's side of bench/gate.py's paired rounds: the good Rollout serving under its
    controller, and a watch of the Rollout (nothing polled)."""

    cluster: Cluster
    argo: Argo
    watch: RolloutWatch
    good: list[dict[str, Any]]
    bad_cfg: EnvironmentConfig
    images: list[str]

    @property
    def url(self) -> str:
        return service_url(self.cluster, self.argo.ns)

    def bad_round(self, i: int) -> None:
        """A bad version applied; until the watch sees the controller's analysis fail it and
        the active Service back on the stable pods."""
        asked = time.time()
        bad = gated(rollout_objects(self.bad_cfg, self.images[1]), f"argo-bad-{i}")
        self.cluster.apply(self.argo.ns, *bad)
        self.watch.wait_switched_back(asked)

    def restore(self) -> None:
        """The good spec applied again, as a team would (outside the measured span)."""
        self.cluster.apply(self.argo.ns, *self.good)
        self.argo.wait(self.images[0], alone=False)


@contextlib.contextmanager
def argo_gate(
    cluster: Cluster,
    bindir: Path,
    tmp: Path,
    ns: str,
    gate: tuple[dict[str, Any], dict[str, Any]],
    images: list[str],
) -> Iterator[ArgoGate]:
    """The Rollout of ``images[0]`` gated by the AnalysisTemplate, in the namespace
    ``ns``-dev of its own, with its controller and identities; all gone after. ``gate``: the
    good and the bad version's settings (bench/gate.py's gate_config: its Prometheus, its
    interval, the bad version's errors)."""
    install_crds(cluster, bindir)
    cluster.create_namespace(f"{ns}-dev")
    ctrl = identity(cluster, f"{ns}-dev", "argo-controller", tmp)
    cli = identity(cluster, f"{ns}-dev", "argo-cli", tmp)
    try:
        cfgs = [
            load_environment(
                write_envs(tmp / f"argo-gate-{n}", ns, cli.kubeconfig, over, ("dev",)) / "dev.yaml"
            )
            for n, over in enumerate(gate)
        ]
        analysis = cfgs[0].analysis
        argo = Argo(cluster, bindir, cli, cfgs[0].namespace, cfgs[0].app)
        with running_controller(bindir, ctrl, argo.ns, tmp / "gate-controller.log"):
            good = gated(rollout_objects(cfgs[0], images[0]), "argo-good")
            template = analysis_template(
                argo.ns, argo.app, str(analysis.prometheus), analysis.interval_seconds
            )
            cluster.apply(argo.ns, template, *good)
            argo.wait(images[0], alone=True, timeout=240)
            # After the Rollout exists: a watch of a missing object ends at once.
            with RolloutWatch(cluster, argo.ns, argo.app) as watch:
                yield ArgoGate(cluster, argo, watch, good, cfgs[1], images)
    finally:
        forget_identities(cluster, ctrl, cli)
        cluster.kubectl("delete", "namespace", f"{ns}-dev", "--wait=false", check=False)
