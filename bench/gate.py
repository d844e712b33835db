"""The analysis gate's detection latency, against Argo Rollouts' (bench/argo/gate.py), in
paired rounds: a version whose error ratio rises to 10% a few seconds after the switch,
under the same load, with one real Prometheus scraping every second for both tools and each
gate evaluating every second. Each round runs both tools once, in an order shuffled per
round (the seed is printed; ``--seed`` repeats it); neither side polls the API with
processes (Bascule's flow runs in-process, Argo's end is read from a watch), and each
load runs on for the same second after its tool is done.

Per tool, from the first error a client saw until only the good version answers again (the
load driver's view); for Bascule also until the rollback's switch (its record). Target for
the latter: at most three evaluation intervals and a second (tests/support/gate.py).

    python -m bench.gate [--rounds N] [--seed S]   # also part of `make bench`
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.measure import settled_at, version
from bench.stats import figure_lines, ratio_lines
from tests.support.cluster import Cluster, LoadDriver, LoadReport, start_local
from tests.support.deploys import history, service_url
from tests.support.envs import write_envs
from tests.support.gate import QUERIES, detection_seconds, detection_target, first_error_at
from tests.support.prometheus import running_prometheus

IMAGES = ["bascule.local/sample-app:v1", "bascule.local/sample-app:v2"]
INTERVAL = 1.0  # seconds between evaluations
RPS, WORKERS = 50, 16  # the same load for both tools
SETTLE = 1.0  # the load runs on this long after each tool is done, for both


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
    """One value per round, paired by index."""

    switch: list[float] = field(default_factory=list)  # Bascule: to the rollback's switch
    seen: list[float] = field(default_factory=list)  # Bascule: to only the good version
    argo_seen: list[float] = field(default_factory=list)  # Argo: to only the good version


def under_load(cluster: Cluster, url: str, bad_round: Callable[[], object]) -> LoadReport:
    """The load on ``url`` from before the bad version is asked for until ``SETTLE`` after
    the tool is done with it."""
    load = LoadDriver(cluster, url, rps=RPS, workers=WORKERS)
    bad_round()
    time.sleep(SETTLE)
    return load.stop()


def seen(report: LoadReport) -> float:
    """From the first error a client saw to only the good version answering."""
    bad = first_error_at(report)
    return float(settled_at(report.samples, bad, version(IMAGES[0])) - bad)


def paired(
    cluster: Cluster, bindir: Path, ns: str, tmp: Path, rounds: int, seed: int
) -> Detections:
    """``rounds`` paired rounds of a bad deploy on top of a good one, for Bascule in ``ns``
    (the staging environment; PREFECT_API_URL set) and Argo (in Argo Rollouts' ``bindir``)
    in a namespace of its own."""
    from bascule.flows.deploy import deploy
    from bench.argo.gate import argo_gate

    rng, times = random.Random(seed), Detections()
    with running_prometheus(cluster) as prom:
        gate = (gate_config(prom.url, False), gate_config(prom.url, True))
        good, bad = (
            write_envs(tmp / name, ns, cluster.kubeconfig, over, ("staging",))
            for name, over in zip(("good", "bad"), gate, strict=True)
        )
        state = deploy(
            environment="staging", image=IMAGES[0], config_dir=str(good), return_state=True
        )
        assert state.is_completed(), state.message
        url = service_url(cluster, ns)

        def ours() -> None:
            state = deploy(
                environment="staging", image=IMAGES[1], config_dir=str(bad), return_state=True
            )
            assert not state.is_completed(), "the bad version was not rolled back"

        with argo_gate(cluster, bindir, tmp, f"{ns}-argo", gate, IMAGES) as argo:
            for i in range(rounds):
                for tool in rng.sample(["bascule", "argo"], 2):
                    if tool == "bascule":
                        report = under_load(cluster, url, ours)
                        last = history(cluster, ns)[-1]
                        assert last["result"] == "rolled-back", last
                        times.switch.append(detection_seconds(last, report))
                        times.seen.append(seen(report))
                    else:
                        report = under_load(cluster, argo.url, partial(argo.bad_round, i))
                        times.argo_seen.append(seen(report))
                        argo.restore()
    return times


def report(times: Detections, seed: int) -> list[str]:
    return [
        *figure_lines("gate_detection_seconds", times.switch, seed),
        f"gate_detection_max_seconds={max(times.switch):.2f}",
        f"gate_detection_target_seconds={detection_target(INTERVAL):.2f}",
        *figure_lines("gate_detection_seen_seconds", times.seen, seed),
        *figure_lines("argo_gate_detection_seen_seconds", times.argo_seen, seed),
        *ratio_lines("gate_vs_argo", times.seen, times.argo_seen, seed),
    ]


def main() -> None:
    from bench.argo.rollouts import build
    from tests.support.prefect_server import running_prefect_server

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, help="the rounds' order (default: a new one, printed)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"gate_seed={seed}")
    bindir = build()
    cluster = start_local()
    ns = f"bench-gate-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(ns)
    with running_prefect_server() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_API_URL"] = server.api_url
        lines = report(paired(cluster, bindir, ns, Path(tmp), args.rounds, seed), seed)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
