"""Where one deploy's time goes, phase by phase: the deploy flow run in-process as
bench/deploy.py runs it for ``deploy_seconds`` (staging, 2 replicas, checks at their minimum,
its own Prefect server and namespace), each phase timed around the functions the flow
calls, in rounds alternating with bench/deploy.py's kubectl steps, each started as
``bench.rounds.fresh_start`` says. Prints one line per phase (median seconds over the
rounds, from the call) for bench/README.md's profile table, and ``deploy_ratio`` with and
without the verification window (the least checks by default, ``--window-1s`` for 1 s).

    python -m bench.phases [--rounds N] [--window-1s] [--configured-checks]

For a view of every thread, run it under py-spy: ``py-spy record --idle --threads -f raw
-o deploy.txt -- python -m bench.phases``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.deploy import IMAGES, LEAST, UNLOADED, kubectl_round
from bench.rounds import fresh_start
from tests.support.cluster import start_local
from tests.support.envs import write_envs
from tests.support.prefect_server import running_prefect_server

Span = tuple[str, float, float]


class Recorder:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.origin = 0.0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans.append((name, started - self.origin, time.perf_counter() - self.origin))

        return timed

    def wrap_cm(self, name: str, cm: Callable[..., Any]) -> Callable[..., Any]:
        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[None]:
            started = time.perf_counter()
            with cm(*args, **kwargs):
                self.spans.append((f"{name} (take)", started - self.origin, self.now()))
                yield
                leaving = time.perf_counter()
            self.spans.append((f"{name} (release)", leaving - self.origin, self.now()))

        return timed

    def now(self) -> float:
        return time.perf_counter() - self.origin


def instrument(rec: Recorder) -> None:
    """Times the flow's phases: the functions ``flows.deploy`` calls by name."""
    import bascule.flows.deploy as d
    from bascule.tasks import artifacts, promotion, rollout, state
    from bascule.tasks.context import Env

    for name in (
        "promoted",
        "with_secrets",
        "preflight",
        "baseline_checks",
        "prune",
        "pipeline",
    ):
        setattr(d, name, rec.wrap(name, getattr(d, name)))
    d.deploy_lock = rec.wrap_cm("lock", d.deploy_lock)
    d.verify = rec.wrap("verify", d.verify)
    rollout.wait_ready = rec.wrap("wait-ready", rollout.wait_ready)
    promotion.label_run = rec.wrap("label-run", promotion.label_run)
    state.save = rec.wrap("history-save", state.save)
    open_env = Env.open
    Env.open = staticmethod(rec.wrap("env-open", open_env))  # type: ignore[method-assign]
    d.Run._publish = rec.wrap("publish", d.Run._publish)  # type: ignore[method-assign]
    d.Run.join_baseline = rec.wrap("join-baseline", d.Run.join_baseline)  # type: ignore[method-assign]
    artifacts.Writer.flush = rec.wrap("artifacts-flush", artifacts.Writer.flush)  # type: ignore[method-assign]
    d.retire_old_color = rec.wrap("retire-old-color", d.retire_old_color)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--window-1s",
        action="store_true",
        help="a 1 s verification window (two rounds of checks), not one round",
    )
    ap.add_argument(
        "--configured-checks",
        action="store_true",
        help="staging's own health checks (3 passes 1 s apart), not the bench's minimum",
    )
    args = ap.parse_args()
    rounds = args.rounds
    over = UNLOADED if args.window_1s else LEAST
    if args.configured_checks:
        over = {k: v for k, v in over.items() if k != "checks"}
    cluster = start_local()
    ns = f"bench-phases-{uuid.uuid4().hex[:6]}"
    for name in (ns, f"{ns}-kubectl"):
        cluster.create_namespace(name)
    rec = Recorder()
    try:
        with running_prefect_server() as server, tempfile.TemporaryDirectory() as tmp:
            os.environ["PREFECT_API_URL"] = server.api_url
            from bascule.flows.deploy import deploy

            # Staging (2 replicas), as bench/deploy.py's deploy_seconds and its kubectl baseline.
            cfg = str(write_envs(Path(tmp), ns, cluster.kubeconfig, over, ("staging",)))
            deploy(environment="staging", image=IMAGES[0], config_dir=cfg)  # sets the stage
            ready: list[float] = []
            baseline: list[float] = []
            instrument(rec)
            per_round: list[dict[str, tuple[float, float, float]]] = []
            for i in range(rounds):
                # Alternating with the kubectl steps: a busy moment of the machine hits both.
                # Each call sets the stage (web-a) and measures web-b, from zero pods.
                baseline.append(kubectl_round(cluster, f"{ns}-kubectl", cfg, ready))
                fresh_start(cluster)  # as each timed kubectl round does
                rec.spans, rec.origin = [], time.perf_counter()
                state = deploy(
                    environment="staging",
                    image=IMAGES[(i + 1) % 2],
                    config_dir=cfg,
                    return_state=True,
                )
                total = rec.now()
                assert state.is_completed(), state.message
                spans: dict[str, tuple[float, float, float]] = {}
                for name, a, b in rec.spans:  # a phase called more than once: first to last
                    first, last, busy = spans.get(name, (a, b, 0.0))
                    spans[name] = (min(first, a), max(last, b), busy + b - a)
                spans["call → return"] = (0.0, total, total)
                per_round.append(spans)
                print(
                    f"round {i + 1}: {total:.2f} s; threads left: {threading.active_count()}; "
                    f"Prefect answers retried so far: {server.retried_answers()}"
                )
                time.sleep(2)
    finally:
        for name in (ns, f"{ns}-kubectl"):
            cluster.kubectl("delete", "namespace", name, "--wait=false")
    med = statistics.median
    print(f"kubectl: apply + rollout status {med(ready):.2f} s, all steps {med(baseline):.2f} s")
    deploys = [r["call → return"][2] for r in per_round]
    # The verification window (1 s here) has no counterpart in the kubectl steps.
    unverified = [r["call → return"][2] - r["verify"][2] for r in per_round]
    print(f"deploy_ratio={med(deploys) / med(baseline):.2f}")
    print(f"deploy_ratio_without_window={med(unverified) / med(baseline):.2f}")
    names = [n for n in per_round[0] if all(n in r for r in per_round)]
    names.sort(key=lambda n: med(r[n][0] for r in per_round))
    print(f"{'phase':<26} {'from':>6} {'to':>6} {'seconds':>7}")
    for n in names:
        a = med(r[n][0] for r in per_round)
        b = med(r[n][1] for r in per_round)
        s = med(r[n][2] for r in per_round)
        print(f"{n:<26} {a:6.2f} {b:6.2f} {s:7.2f}")


if __name__ == "__main__":
    main()
