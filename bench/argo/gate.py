"""Argo's counterpart of bench/gate.py: a blue-green postPromotionAnalysis with an
AnalysisTemplate (Prometheus provider) running the error-ratio query of Bascule's gate, the
query that catches the bad version, evaluated every second against the same Prometheus
setup. The bad version's pods answer 10% errors 9 s after they start, as in bench/gate.py;
from the first error a client saw until only the good version answers again (the load
driver's view), after Argo aborts and switches the active Service back to the stable pods.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bascule.config_files import load_environment
from bascule.manifests import LABEL_RELEASE, service_name
from bench.argo.rollouts import HASH_LABEL, Argo, rollout_objects
from bench.gate import INTERVAL, gate_config
from bench.measure import settled_at, version
from tests.support.cluster import Cluster, LoadDriver, wait_for
from tests.support.deploys import service_url
from tests.support.envs import write_envs
from tests.support.gate import ERROR_RATIO
from tests.support.prometheus import running_prometheus

TEMPLATE = "error-ratio"
WINDOW = 16  # evaluations, as bench/gate.py's verification window of 16 s at 1 s


def analysis_template(cfg_namespace: str, app: str, prometheus: str) -> dict[str, Any]:
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
                    "interval": f"{INTERVAL:g}s",
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


def detection(
    cluster: Cluster, argo: Argo, tmp: Path, rounds: int, images: list[str]
) -> list[float]:
    """``rounds`` bad deploys on top of a good one; the detection time of each."""
    good_image, bad_image = images
    times = []
    with running_prometheus(cluster) as prom:
        dirs = {
            errors: write_envs(
                tmp / f"argo-gate-{errors}",
                argo.ns.removesuffix("-dev"),
                argo.cli.kubeconfig,
                gate_config(prom.url, errors),
                ("dev",),
            )
            for errors in (False, True)
        }
        good_cfg = load_environment(dirs[False] / "dev.yaml")
        bad_cfg = load_environment(dirs[True] / "dev.yaml")
        # A fresh Rollout: the rounds before left ReplicaSets kept for minutes.
        argo.cluster.kubectl("-n", argo.ns, "delete", "rollout", argo.app, "--wait=true")
        good = gated(rollout_objects(good_cfg, good_image), "argo-good")
        cluster.apply(argo.ns, analysis_template(argo.ns, argo.app, prom.url), *good)
        argo.wait(good_image, alone=True, timeout=240)
        for i in range(rounds):
            load = LoadDriver(cluster, service_url(cluster, argo.ns), rps=50, workers=16)
            cluster.apply(argo.ns, *gated(rollout_objects(bad_cfg, bad_image), f"argo-bad-{i}"))
            wait_for(lambda: switched_back(argo), 180, interval=0.2, what="Argo to abort")
            time.sleep(1.0)
            report = load.stop()
            went_bad = min(s["t"] for s in report.failures if s["error"] == "HTTP 500")
            times.append(settled_at(report.samples, went_bad, version(good_image)) - went_bad)
            cluster.apply(argo.ns, *good)  # back to the stable spec, as a team would
            argo.wait(good_image, alone=False)
    return times


def switched_back(argo: Argo) -> bool:
    """Argo aborted the update and its active Service selects the stable pods again."""
    status = argo.cluster.get_json("-n", argo.ns, "rollout", argo.app).get("status", {})
    if not status.get("abort"):
        return False
    svc = argo.cluster.get_json("-n", argo.ns, "service", service_name(argo.app, "active"))
    return bool(svc["spec"]["selector"].get(HASH_LABEL) == status.get("stableRS"))
