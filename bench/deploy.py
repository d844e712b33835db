"""Benchmark of a blue-green deploy and a rollback on the local cluster, against plain
kubectl doing the same Kubernetes steps, in one script. Prints one name=value per line.

    make bench            # or: python -m bench.deploy [--rounds N] [--ratio-rounds N]

- deploy_ratio: the pipeline (checks and waits at the least the configuration allows: one
  round of checks after the switch) ÷ `kubectl apply` of the idle color + `kubectl
  rollout status` + `kubectl patch` of the Service selector + `kubectl scale` of the old
  color; deploy_window_1s_ratio: the same with a 1 s verification window. Rounds
  alternate the three, each from a settled node after a random pause (``fresh_start``).
- rollback_ratio: `bascule rollback` while the old color still runs ÷ `kubectl rollout
  undo` + `rollout status` of a Deployment of the same size.
- failed_requests: HTTP failures seen by a load driver (~100 req/s) during deploy and
  rollback; api_requests_per_deploy: Kubernetes API requests one deploy makes.
- lock_recovery_seconds: from the SIGKILL of a `bascule deploy` holding the deploy lock
  until a deploy of the same app and environment, started at once, holds it (median of
  the rounds; each round's successor is the next round's victim).
- crash_recovery_seconds: a deploy run by a process worker is SIGKILLed right after the
  switch; from the kill until only the old version answers, with nobody re-running
  anything (the `recover/<env>` automation of prefect.yaml does it).
- gate_detection_seconds: bench/gate.py's, the Prometheus analysis gate's time from a
  version's errors starting to the rollback's switch; gate_vs_argo against Argo's gate, in
  paired rounds of their own (--gate-rounds, in an order --seed repeats).
- Against Argo Rollouts on the same cluster (bench/argo/compare.py): deploy_vs_argo,
  rollback_vs_argo (Bascule ÷ Argo), failed requests, API requests per deploy and the
  controller's idle footprint. Every figure is described in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bascule.config_files import load_environment, load_templates
from bascule.manifests import render_deployment
from bench import gate
from bench.argo.compare import compare
from bench.argo.rollouts import build
from bench.rounds import fresh_start
from tests.support import workers
from tests.support.cluster import Cluster, LoadDriver, start_local
from tests.support.deploys import history, kill, run, service_url, start, wait_phase
from tests.support.envs import write_envs
from tests.support.locks import kill_and_retake
from tests.support.prefect_server import running_prefect_server
from tests.support.sample import service

IMAGES = ["bascule.local/sample-app:v1", "bascule.local/sample-app:v2"]
# Checks at their minimum, a 1 s verification window (two rounds of checks after the switch).
MINIMAL = {
    "checks": {
        "health": [{"name": "ready", "path": "/readyz", "successes": 1}],
        "smoke": {"http": []},
    },
    "verification": {"window_seconds": 1, "interval_seconds": 1},
    "rollout": {"scale_down_delay_seconds": 1},
}
# The deploy ratio's rounds run without load: the app exits at SIGTERM without draining
# (no request is in flight), so the wait for the last round's pods to go is 3 s shorter.
UNLOADED = {**MINIMAL, "env": {"DRAIN_SECONDS": 0}}
# The least the configuration allows: window 0 is one round of checks right after the
# switch, and the old color goes as soon as it passed, as in the kubectl steps.
LEAST = {
    **UNLOADED,
    "verification": {"window_seconds": 0, "interval_seconds": 1},
    "rollout": {"scale_down_delay_seconds": 0},
}


def same_pods(cfg_dir: str, name: str, image: str) -> dict[str, Any]:
    """The Deployment Bascule would apply (same pod template, probes and size), renamed so
    plain kubectl manages it."""
    env_cfg = load_environment(Path(cfg_dir) / "staging.yaml")
    dep = render_deployment(
        env_cfg, load_templates(env_cfg.manifests), color="blue", image=image, release_id="baseline"
    )
    labels = {"app": name}
    dep["metadata"] = {"name": name, "labels": labels}
    dep["spec"]["selector"] = {"matchLabels": labels}
    dep["spec"]["template"]["metadata"]["labels"] = labels
    return dep


def kubectl_round(c: Cluster, ns: str, cfg_dir: str, ready: list[float] | None = None) -> float:
    """The same steps by hand, once. web-a serves (set up, not timed); then, timed: web-b
    applied from zero pods (as Bascule's idle color is), waited for, the Service patched to
    it, web-a scaled to zero. web-b goes back to zero after, for the next round. ``ready``
    gets apply + rollout status alone. The timed part starts as ``fresh_start`` says, as
    Bascule's rounds do."""
    c.apply(ns, service("web", {"app": "web-a"}), same_pods(cfg_dir, "web-a", IMAGES[0]))
    c.kubectl("-n", ns, "rollout", "status", "deployment/web-a", "--timeout=120s")
    web_b = same_pods(cfg_dir, "web-b", IMAGES[1])
    fresh_start(c)
    started = time.perf_counter()
    c.apply(ns, web_b)
    c.kubectl("-n", ns, "rollout", "status", "deployment/web-b", "--timeout=120s")
    if ready is not None:
        ready.append(time.perf_counter() - started)
    selector = json.dumps({"spec": {"selector": {"app": "web-b"}}})
    c.kubectl("-n", ns, "patch", "service", "web", "-p", selector)
    c.kubectl("-n", ns, "scale", "deployment/web-a", "--replicas=0")
    took = time.perf_counter() - started
    c.kubectl("-n", ns, "scale", "deployment/web-b", "--replicas=0")
    return took


def kubectl_undo(c: Cluster, ns: str, rounds: int, cfg_dir: str) -> list[float]:
    c.apply(ns, same_pods(cfg_dir, "undo", IMAGES[0]))
    c.kubectl("-n", ns, "rollout", "status", "deployment/undo", "--timeout=120s")
    times = []
    for i in range(rounds):
        c.kubectl("-n", ns, "set", "image", "deployment/undo", f"app={IMAGES[(i + 1) % 2]}")
        c.kubectl("-n", ns, "rollout", "status", "deployment/undo", "--timeout=120s")
        started = time.perf_counter()
        c.kubectl("-n", ns, "rollout", "undo", "deployment/undo")
        c.kubectl("-n", ns, "rollout", "status", "deployment/undo", "--timeout=120s")
        times.append(time.perf_counter() - started)
    return times


def lock_recovery(c: Cluster, api: str, ns: str, tmp: Path, rounds: int) -> list[float]:
    """Kills a deploy holding the lock, times a new deploy getting it, ``rounds`` times."""
    over = {**MINIMAL, "rollout": {"scale_down_delay_seconds": 1}}  # no lock wait: the default
    cfg = str(write_envs(tmp / "lock", ns, c.kubeconfig, over, ("staging",)))
    kube, times = c.client(), []
    holder = start(api, "deploy", "--dir", cfg, "staging", "--image", IMAGES[0], log=tmp / "0.log")
    for i in range(rounds):
        image, log = IMAGES[(i + 1) % 2], tmp / f"{i + 1}.log"
        took, holder = kill_and_retake(api, kube, ns, cfg, image, holder, log)
        times.append(took)
    kill(holder)
    kube.close()
    return times


def crash_recovery(cluster: Cluster, api: str, ns: str, tmp: Path) -> float:
    """v1 serving, prefect.yaml registered with staging's worker, then a deploy of v2
    through it killed right after the switch: seconds until v1 alone answers again."""
    over = {
        **MINIMAL,
        "verification": {"window_seconds": 20, "interval_seconds": 1},
        "rollout": {"scale_down_delay_seconds": 20},
    }
    repo = workers.Repository.make(tmp / "crash")
    repo.commit(ns, "config", over, ("staging",))
    repo.push()
    env = {"KUBECONFIG": str(cluster.kubeconfig)}
    cfg = str(repo.work / "deployments")
    seeded = run(api, "deploy", "--dir", cfg, "staging", "--image", IMAGES[0], env=env)
    assert seeded.returncode == 0, seeded.stderr
    workers.register(api, tmp / "prefect.yaml")
    log = tmp / "worker.log"
    with workers.bascule_worker(api, log, "staging", repo.bare, env=env) as worker:
        got = workers.kill_after_switch(cluster, api, ns, worker, IMAGES[1], old_version="v1")
    assert got.killed["result"] == "interrupted", got.killed
    return got.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--ratio-rounds",
        type=int,
        default=5,
        help="rounds of deploy_ratio and of the deploys against Argo: a pod's start moves in "
        "steps of a second, so more",
    )
    ap.add_argument(
        "--gate-rounds", type=int, default=10, help="paired rounds of the gate against Argo's"
    )
    ap.add_argument("--seed", type=int, help="the gate rounds' order (default: a new one)")
    args = ap.parse_args()
    rounds = args.rounds
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"gate_seed={seed}")
    argo = build()  # first: a cold build takes minutes, and a failed one should stop us early
    cluster = start_local()
    tag = uuid.uuid4().hex[:6]
    ns_plain, ns_bascule = f"bench-kubectl-{tag}", f"bench-bascule-{tag}"
    ns_crash, ns_gate = f"bench-crash-{tag}", f"bench-gate-{tag}"
    for ns in (ns_plain, ns_bascule, ns_crash, ns_gate):
        cluster.create_namespace(ns)
    with running_prefect_server() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_API_URL"] = server.api_url
        from bascule.flows.deploy import deploy  # after PREFECT_API_URL: the flows report there
        from bascule.flows.rollback import rollback

        cfg = str(write_envs(Path(tmp), ns_bascule, cluster.kubeconfig, MINIMAL, ("staging",)))
        least, windowed_cfg = (
            str(write_envs(Path(tmp) / name, ns_bascule, cluster.kubeconfig, over, ("staging",)))
            for name, over in (("least", LEAST), ("window", UNLOADED))
        )
        slow_cfg = str(
            write_envs(
                Path(tmp) / "keep",
                ns_bascule,
                cluster.kubeconfig,
                {**MINIMAL, "rollout": {"scale_down_delay_seconds": 600}},
                ("staging",),
            )
        )
        deploy(environment="staging", image=IMAGES[0], config_dir=cfg)  # sets the stage
        # Rounds alternate kubectl, Bascule at the least checks, Bascule with the 1 s window,
        # so that a busy moment of the machine hits all three; each from a settled node.
        baseline: list[float] = []
        timed: dict[str, list[float]] = {least: [], windowed_cfg: []}
        requests: list[int] = []
        for i in range(args.ratio_rounds):
            baseline.append(kubectl_round(cluster, ns_plain, least))
            for j, config in enumerate(timed):
                fresh_start(cluster)
                started = time.perf_counter()
                image = IMAGES[(2 * i + j + 1) % 2]
                state = deploy(
                    environment="staging", image=image, config_dir=config, return_state=True
                )
                timed[config].append(time.perf_counter() - started)
                assert state.is_completed(), state.message
                if config == windowed_cfg:  # as in the runs before the least checks
                    requests.append(history(cluster, ns_bascule)[-1]["api_requests"])
        ours, windowed = timed[least], timed[windowed_cfg]
        # Rollback while the old color still runs (the deploy keeps it for 600 s; the
        # deploy's own wait for that is not part of what is measured).
        undo = kubectl_undo(cluster, ns_plain, rounds, cfg)
        # Timings above ran without load, like their baselines; from here on a load driver
        # counts failed requests through one more deploy and the rollbacks.
        load = LoadDriver(cluster, service_url(cluster, ns_bascule), rps=100)
        # The same image as the last round: only an explicit redeploy runs a cycle for it.
        under_load = deploy(
            environment="staging",
            image=IMAGES[0],
            config_dir=cfg,
            redeploy=True,
            return_state=True,
        )
        assert under_load.is_completed(), under_load.message
        rollbacks, switches, to_switched = [], [], []
        for i in range(rounds):
            seen = {r["id"] for r in history(cluster, ns_bascule)}
            proc = subprocess.Popen(
                [
                    "python",
                    "-m",
                    "bascule.cli",
                    "deploy",
                    "--dir",
                    slow_cfg,
                    "staging",
                    "--image",
                    IMAGES[(i + 1) % 2],
                    "--redeploy",  # every other round it is the image the rollback restored
                ],
                env={**os.environ},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_phase(cluster, ns_bascule, IMAGES[(i + 1) % 2], {"done"}, ignore=seen)
            started, wall = time.perf_counter(), time.time()
            state = rollback(environment="staging", config_dir=cfg, return_state=True)
            rollbacks.append(time.perf_counter() - started)
            assert state.is_completed(), state.message
            last = history(cluster, ns_bascule)[-1]
            switch = next(s for s in last["steps"] if s["name"] == "switch")
            switches.append(switch["seconds"])
            to_switched.append(switch["at"] - wall)
            kill(proc)
        report = load.stop()
        recoveries = lock_recovery(cluster, server.api_url, ns_bascule, Path(tmp), rounds)
        crash = crash_recovery(cluster, server.api_url, ns_crash, Path(tmp))
        # The gate against Argo's, in paired rounds of their own (bench/gate.py).
        detections = gate.paired(cluster, argo, ns_gate, Path(tmp), args.gate_rounds, seed)
        # Against Argo Rollouts: its own namespaces, alternating rounds under load.
        versus = compare(cluster, argo, Path(tmp), tag, rounds, MINIMAL, IMAGES, args.ratio_rounds)
    ns_versus = [f"bench-vsb-{tag}-dev", f"bench-vsa-{tag}-dev"]
    for ns in (ns_plain, ns_bascule, ns_crash, ns_gate, *ns_versus):
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
    med = statistics.median
    print(f"rounds={rounds}")
    print(f"ratio_rounds={args.ratio_rounds}")
    print(f"baseline_kubectl_seconds={med(baseline):.2f}")
    print(f"deploy_seconds={med(ours):.2f}")
    print(f"deploy_ratio={med(ours) / med(baseline):.2f}")
    print(f"deploy_window_1s_seconds={med(windowed):.2f}")
    print(f"deploy_window_1s_ratio={med(windowed) / med(baseline):.2f}")
    # Every round: each moves in steps of a second with its pods' start (bench/README.md).
    for name, values in (
        ("baseline_kubectl", baseline),
        ("deploy", ours),
        ("deploy_window_1s", windowed),
    ):
        print(f"{name}_rounds={','.join(f'{t:.2f}' for t in values)}")
    print(f"kubectl_rollout_undo_seconds={med(undo):.2f}")
    print(f"rollback_seconds={med(rollbacks):.2f}")
    print(f"rollback_switch_seconds={med(switches):.3f}")
    print(f"rollback_until_switched_seconds={med(to_switched):.3f}")
    print(f"rollback_ratio={med(rollbacks) / med(undo):.3f}")
    print(f"rollback_until_switched_ratio={med(to_switched) / med(undo):.3f}")
    print(f"failed_requests={len(report.failures)}")
    print(f"requests_sent={report.total}")
    print(f"api_requests_per_deploy={med(requests):.0f}")
    print(f"lock_recovery_seconds={med(recoveries):.1f}")
    print(f"crash_recovery_seconds={crash:.1f}")
    for name, value in versus.items():
        print(f"{name}={value}")
    print("\n".join(gate.report(detections, seed)))


if __name__ == "__main__":
    main()
