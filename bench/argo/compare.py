"""Bascule against Argo Rollouts on the same cluster, same app, same load: alternating
rounds, each tool in a namespace of its own, the sample app rendered from the same
templates with the same dev settings (checks at their minimum for Bascule; Argo has none).

Every time is taken by a load driver (100 req/s at the tool's active Service, a new
connection per request): from the moment the deploy or rollback is asked for until the
first answer after which only the target version answers. API requests are counted by the
API server itself, per client identity (one ServiceAccount and FlowSchema each).

    python -m bench.argo.compare [--rounds N] [--deploy-rounds N]   # also in `make bench`
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bascule.config_files import load_environment
from bascule.manifests import service_name
from bench.argo.rollouts import (
    Argo,
    api_counts,
    build,
    forget_identities,
    identity,
    install_crds,
    rollout_objects,
    running_controller,
)
from bench.measure import (
    DeploySplit,
    answering_before,
    failure_kinds,
    requests_between,
    settled_at,
    split_deploy,
    version,
)
from bench.rounds import fresh_start
from bench.timeline import Timeline
from tests.support.cluster import Cluster, LoadDriver, LoadReport, wait_for
from tests.support.deploys import history, kill, service_url, wait_phase
from tests.support.envs import merge, write_envs
from tests.support.processes import idle_footprint, usage

RPS = 100
IDLE_SECONDS = 30
KEEP_OLD_SECONDS = 600  # the old color / ReplicaSet outlives every rollback round


@dataclass
class Tool:
    """One tool's measurements across the rounds."""

    deploy_seen: list[float] = field(default_factory=list)
    deploy_asked: list[tuple[float, str]] = field(default_factory=list)  # (when, image)
    deploy_splits: list[DeploySplit] = field(default_factory=list)
    deploy_done: list[float] = field(default_factory=list)
    rollback_seen: list[float] = field(default_factory=list)
    api_requests: list[int] = field(default_factory=list)
    sent: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def under_load(
        self, cluster: Cluster, url: str, source: str, target: str, act: Callable[[], float]
    ) -> float:
        """Runs ``act`` (which returns when it asked for the change) under load; seconds from
        then until only ``target`` answered. ``source`` must have been answering until then,
        or the round measured nothing."""
        load = LoadDriver(cluster, url, rps=RPS)
        time.sleep(1.5)  # the driver is sending before anything moves
        try:
            asked = act()
            time.sleep(1.0)  # a tail that proves no old answer comes back
        finally:
            report = load.stop()
        self.count(report)
        was = answering_before(report.samples, asked)
        if was != version(source):
            raise RuntimeError(f"{was} answered when the change was asked for, not {source}")
        return settled_at(report.samples, asked, version(target)) - asked

    def count(self, report: LoadReport) -> None:
        self.failures += report.failures
        self.sent += report.total

    def split(self, timeline: Timeline, ns: str, service: str, replicas: int) -> None:
        """Each deploy round's time split by what the watches saw (``split_deploy``)."""
        self.deploy_splits = [
            split_deploy(timeline.sightings, ns, asked, image, service, replicas, asked + seen)
            for (asked, image), seen in zip(self.deploy_asked, self.deploy_seen, strict=True)
        ]

    def split_figures(self, name: str) -> dict[str, str]:
        parts = [
            f"{s.before_pods:.2f}/{s.pods_start:.2f}/{s.to_switch:.2f}/{s.to_seen:.2f}"
            for s in self.deploy_splits
        ]
        return {
            f"{name}_deploy_own_seconds": f"{self.own_time():.2f}",
            f"{name}_deploy_split_rounds": ",".join(parts),
        }

    def own_time(self) -> float:
        return statistics.median(s.own for s in self.deploy_splits)


def answers(cluster: Cluster, url: str, image: str, times: int = 3) -> None:
    """Until the Service answered ``image``'s version ``times`` in a row: the switch reached
    kube-proxy, not only the API."""
    streak = 0

    def got() -> bool:
        nonlocal streak
        status, body = cluster.http_get(url)
        ok = status == 200 and json.loads(body).get("version") == version(image)
        streak = streak + 1 if ok else 0
        return streak >= times

    wait_for(got, 60, interval=0.1, what=f"{url} to answer {image}")


def compare(
    cluster: Cluster,
    bindir: Path,
    tmp: Path,
    tag: str,
    rounds: int,
    minimal: dict[str, Any],
    images: list[str],
    deploy_rounds: int | None = None,
) -> dict[str, str]:
    """Runs the rounds with the Argo Rollouts in ``bindir`` (``build()``); returns the
    name=value figures, in print order. ``deploy_rounds`` (default ``rounds``): the deploys'
    own, whose times move in steps of a second and need more."""
    deploys = deploy_rounds or rounds
    from bascule.flows.deploy import deploy
    from bascule.flows.rollback import rollback

    install_crds(cluster, bindir)
    ns_b, ns_a = f"bench-vsb-{tag}", f"bench-vsa-{tag}"
    for ns in (ns_b, ns_a):
        cluster.create_namespace(f"{ns}-dev")
    ours = identity(cluster, f"{ns_b}-dev", "bascule", tmp)
    ctrl = identity(cluster, f"{ns_a}-dev", "argo-controller", tmp)
    cli = identity(cluster, f"{ns_a}-dev", "argo-cli", tmp)
    try:
        fast = write_envs(tmp / "vs-fast", ns_b, ours.kubeconfig, minimal, ("dev",))
        keep = merge(minimal, {"rollout": {"scale_down_delay_seconds": KEEP_OLD_SECONDS}})
        slow = write_envs(tmp / "vs-slow", ns_b, ours.kubeconfig, keep, ("dev",))
        argo_dir = write_envs(tmp / "vs-argo", ns_a, cli.kubeconfig, minimal, ("dev",))
        argo_cfg = load_environment(argo_dir / "dev.yaml")
        argo = Argo(cluster, bindir, cli, argo_cfg.namespace, argo_cfg.app)
        b, a = Tool(), Tool()
        with running_controller(
            bindir, ctrl, argo.ns, tmp / "rollouts-controller.log"
        ) as controller:
            cluster.apply(argo.ns, *rollout_objects(argo_cfg, images[0]))
            argo.wait(images[0], alone=True)
            state = deploy(
                environment="dev", image=images[0], config_dir=str(fast), return_state=True
            )
            assert state.is_completed(), state.message
            # The controller's footprint with nothing to do (Bascule's in the cluster is none).
            time.sleep(5)
            before = api_counts(cluster)
            idle = idle_footprint(IDLE_SECONDS, argo=lambda: usage(controller.pid)[:2])
            idle_requests = requests_between(before, api_counts(cluster), [ctrl.name])
            b_url, a_url = service_url(cluster, f"{ns_b}-dev"), service_url(cluster, argo.ns)

            # Sees every deploy round of both tools.
            with Timeline(cluster) as timeline:
                for i in range(deploys):  # alternating; the old version scaled down after each
                    image = images[(i + 1) % 2]

                    def ours_deploy(image: str = image) -> float:
                        fresh_start(cluster)
                        before, asked = api_counts(cluster), time.time()
                        state = deploy(
                            environment="dev", image=image, config_dir=str(fast), return_state=True
                        )
                        b.deploy_done.append(time.time() - asked)
                        b.deploy_asked.append((asked, image))
                        assert state.is_completed(), state.message
                        b.api_requests.append(
                            requests_between(before, api_counts(cluster), [ours.name])
                        )
                        return asked

                    def argo_deploy(image: str = image) -> float:
                        fresh_start(cluster)
                        before, asked = api_counts(cluster), time.time()
                        argo.set_image(image)
                        argo.wait(image, alone=True)
                        a.deploy_done.append(time.time() - asked)
                        a.deploy_asked.append((asked, image))
                        a.api_requests.append(
                            requests_between(before, api_counts(cluster), [ctrl.name, cli.name])
                        )
                        return asked

                    old = images[i % 2]
                    b.deploy_seen.append(b.under_load(cluster, b_url, old, image, ours_deploy))
                    a.deploy_seen.append(a.under_load(cluster, a_url, old, image, argo_deploy))
            active = service_name(argo_cfg.app, "active")  # the same name in both namespaces
            b.split(timeline, f"{ns_b}-dev", active, argo_cfg.replicas)
            a.split(timeline, argo.ns, active, argo_cfg.replicas)

            # Rollbacks while the old version still runs: Bascule keeps the old color for the
            # scale-down delay, Argo the old ReplicaSet; `undo` to it within that delay is
            # Argo's fast-tracked rollback (no new pods), as Bascule's is (no new pods).
            argo.scale_down_delay(KEEP_OLD_SECONDS)
            current = images[deploys % 2]
            other = images[(deploys + 1) % 2]
            for _ in range(rounds):

                def ours_rollback() -> float:
                    seen = {r["id"] for r in history(cluster, f"{ns_b}-dev")}
                    argv = [
                        sys.executable,
                        "-m",
                        "bascule.cli",
                        "deploy",
                        "--dir",
                        str(slow),
                        "dev",
                    ]
                    proc = subprocess.Popen(
                        [*argv, "--image", other, "--redeploy"],
                        env={**os.environ},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    try:
                        wait_phase(cluster, f"{ns_b}-dev", other, {"done"}, ignore=seen)
                        answers(cluster, b_url, other)
                        asked = time.time()
                        state = rollback(environment="dev", config_dir=str(fast), return_state=True)
                        assert state.is_completed(), state.message
                    finally:
                        kill(proc)
                    return asked

                def argo_rollback() -> float:
                    argo.set_image(other)
                    argo.wait(other, alone=False)
                    answers(cluster, a_url, other)
                    asked = time.time()
                    argo.undo()
                    argo.wait(current, alone=False)
                    return asked

                b.rollback_seen.append(b.under_load(cluster, b_url, other, current, ours_rollback))
                a.rollback_seen.append(a.under_load(cluster, a_url, other, current, argo_rollback))
    finally:
        forget_identities(cluster, ours, ctrl, cli)

    started = time.perf_counter()
    # What `bascule deploy` pays before its flow starts: a fresh interpreter importing it.
    imports = "import bascule.cli, flows.deploy"
    subprocess.run([sys.executable, "-c", imports], capture_output=True, check=True)
    cli_start = time.perf_counter() - started
    med = statistics.median
    return {
        "argo_rollouts_version": bindir.name.removeprefix("argo-rollouts-"),
        "bascule_deploy_seen_seconds": f"{med(b.deploy_seen):.2f}",
        "argo_deploy_seen_seconds": f"{med(a.deploy_seen):.2f}",
        "deploy_vs_argo": f"{med(b.deploy_seen) / med(a.deploy_seen):.2f}",
        # Every round, for a reader who doubts a median of few: a pod's start moves in steps.
        "bascule_deploy_seen_rounds": ",".join(f"{t:.2f}" for t in b.deploy_seen),
        "argo_deploy_seen_rounds": ",".join(f"{t:.2f}" for t in a.deploy_seen),
        # Each tool's fastest round: its pods at the kubelet's early step.
        "deploy_vs_argo_fastest": f"{min(b.deploy_seen) / min(a.deploy_seen):.2f}",
        # Each round split: the tool until its pods exist / the kubelet until they are Ready
        # / the tool until the switch / kube-proxy until only the new version answers.
        **b.split_figures("bascule"),
        **a.split_figures("argo"),
        # The tools' own parts alone, out of reach of the pods' steps of a second.
        "deploy_own_vs_argo": f"{b.own_time() / a.own_time():.2f}",
        "bascule_deploy_done_seconds": f"{med(b.deploy_done):.2f}",
        "argo_deploy_done_seconds": f"{med(a.deploy_done):.2f}",
        "bascule_rollback_seen_seconds": f"{med(b.rollback_seen):.2f}",
        "argo_rollback_seen_seconds": f"{med(a.rollback_seen):.2f}",
        "rollback_vs_argo": f"{med(b.rollback_seen) / med(a.rollback_seen):.2f}",
        "bascule_rollback_seen_rounds": ",".join(f"{t:.2f}" for t in b.rollback_seen),
        "argo_rollback_seen_rounds": ",".join(f"{t:.2f}" for t in a.rollback_seen),
        "bascule_failed_requests_vs": str(len(b.failures)),
        "bascule_requests_sent_vs": str(b.sent),
        "argo_failed_requests": str(len(a.failures)),
        "bascule_failure_kinds_vs": failure_kinds(b.failures),
        "argo_failure_kinds": failure_kinds(a.failures),
        "argo_requests_sent": str(a.sent),
        "bascule_api_requests_per_deploy_server": f"{med(b.api_requests):.0f}",
        "argo_api_requests_per_deploy": f"{med(a.api_requests):.0f}",
        **idle,
        "argo_idle_api_requests_per_minute": f"{idle_requests * 60 / IDLE_SECONDS:.0f}",
        "bascule_cli_start_seconds": f"{cli_start:.2f}",
    }


def main() -> None:
    import argparse
    import tempfile
    import uuid

    from bench.deploy import IMAGES, MINIMAL
    from tests.support.cluster import start_local
    from tests.support.prefect_server import running_prefect_server

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--deploy-rounds", type=int, default=5)
    args = ap.parse_args()
    rounds = args.rounds
    bindir, cluster, tag = build(), start_local(), uuid.uuid4().hex[:6]
    with running_prefect_server() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            figures = compare(
                cluster, bindir, Path(tmp), tag, rounds, MINIMAL, IMAGES, args.deploy_rounds
            )
        finally:
            for ns in (f"bench-vsb-{tag}-dev", f"bench-vsa-{tag}-dev"):
                cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    for name, value in figures.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
