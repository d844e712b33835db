"""The analysis gate's detection latency: a version whose error ratio rises to 10% a few
seconds after the switch, under load, with a real Prometheus scraping every second and the
gate evaluating every second; from the first error a client saw to the rollback's switch.
Target: at most two evaluation intervals and a second.

    python -m bench.gate [--rounds N]   # also part of `make bench`
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import settled_at, version
from tests.support.cluster import Cluster, LoadDriver, start_local
from tests.support.deploys import history, service_url
from tests.support.envs import write_envs
from tests.support.gate import QUERIES, detection_seconds
from tests.support.prometheus import running_prometheus

IMAGES = ["bascule.local/sample-app:v1", "bascule.local/sample-app:v2"]
INTERVAL = 1.0  # seconds between evaluations


def gate_config(prometheus: str, errors: bool) -> dict[str, object]:
    return {
        "env": {
            "DRAIN_SECONDS": "1",
            **({"ERROR_RATE": "10", "ERROR_AFTER": "9"} if errors else {}),
        },
        "checks": {
            "health": [{"name": "ready", "path": "/readyz", "successes": 1}],
            "smoke": {"http": []},
        },
        "verification": {"window_seconds": 16, "interval_seconds": 1},
        "rollout": {"scale_down_delay_seconds": 16},
        "analysis": {"prometheus": prometheus, "queries": QUERIES, "interval_seconds": INTERVAL},
    }


@dataclass
class Detections:
    switch: list[float] = field(default_factory=list)  # to the rollback's switch (its record)
    seen: list[float] = field(default_factory=list)  # to only the good version answering


def detection(cluster: Cluster, ns: str, tmp: Path, rounds: int) -> Detections:
    """``rounds`` bad deploys on top of a good one; the detection times of each."""
    from bascule.flows.deploy import deploy

    times = Detections()
    with running_prometheus(cluster) as prom:
        good = write_envs(
            tmp / "good", ns, cluster.kubeconfig, gate_config(prom.url, False), ("staging",)
        )
        bad = write_envs(
            tmp / "bad", ns, cluster.kubeconfig, gate_config(prom.url, True), ("staging",)
        )
        state = deploy(
            environment="staging", image=IMAGES[0], config_dir=str(good), return_state=True
        )
        assert state.is_completed(), state.message
        for _ in range(rounds):
            load = LoadDriver(cluster, service_url(cluster, ns), rps=50, workers=16)
            state = deploy(
                environment="staging", image=IMAGES[1], config_dir=str(bad), return_state=True
            )
            report = load.stop()
            last = history(cluster, ns)[-1]
            assert last["result"] == "rolled-back", last
            times.switch.append(detection_seconds(last, report))
            went_bad = min(s["t"] for s in report.failures if s["error"] == "HTTP 500")
            times.seen.append(settled_at(report.samples, went_bad, version(IMAGES[0])) - went_bad)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    rounds = ap.parse_args().rounds
    cluster = start_local()
    ns = f"bench-gate-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(ns)
    from tests.support.prefect_server import running_prefect_server

    with running_prefect_server() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_API_URL"] = server.api_url
        report(detection(cluster, ns, Path(tmp), rounds))
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def report(times: Detections) -> None:
    print(f"gate_detection_seconds={statistics.median(times.switch):.2f}")
    print(f"gate_detection_max_seconds={max(times.switch):.2f}")
    print(f"gate_detection_target_seconds={2 * INTERVAL + 1:.2f}")
    print(f"gate_detection_seen_seconds={statistics.median(times.seen):.2f}")


if __name__ == "__main__":
    main()
