"""The path users take, against Argo Rollouts, timed from the moment the user's command
process starts (issue 24): Bascule's ``bascule trigger`` → the Prefect server → the
environment's worker (``bascule worker``, cloning a config-only app repository) → the flow;
``bascule deploy`` as a process of its own (the flow run in that process, no worker);
Argo's ``kubectl argo rollouts set image`` → its controller. Rollbacks: the README's
``bascule trigger ENV --rollback`` through the same worker and ``bascule rollback`` as a
process, against ``kubectl argo rollouts undo``, with kubectl's own selector patch as the
baseline.

Paired rounds in random order: each round runs every tool once, in an order shuffled per
round (the seed is printed; ``--seed`` repeats it). The app, templates and settings are
bench/argo/compare.py's (the dev environment, checks at their minimum), and every "seen"
time is taken by its load driver. Each figure is printed as its mean with a 95% interval,
its median and every round; each ratio as the ratio of means with a paired interval.

    python -m bench.realpath [--rounds N] [--cli-rounds N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bascule.apps import overlay as merge
from bascule.config import EnvironmentConfig
from bascule.config_files import load_environment, load_templates
from bascule.manifests import LABEL_COLOR, render_deployment, render_service, service_name
from bascule.vocabulary import Color
from bench.argo.compare import Tool, answers
from bench.argo.rollouts import (
    Argo,
    build,
    forget_identities,
    identity,
    install_crds,
    rollout_objects,
    running_controller,
)
from bench.argo.watch import RolloutWatch
from bench.deploy import IMAGES, MINIMAL
from bench.measure import failure_kinds, seconds_to_first
from bench.rounds import fresh_start
from bench.stats import figure_lines, ratio_lines
from bench.timeline import Timeline
from tests.support import deploys, sample, workers
from tests.support.apps import app_names, group_usage, write_overlays
from tests.support.cluster import Cluster
from tests.support.envs import write_envs
from tests.support.processes import idle_footprint, usage

BIN = Path(sys.executable).parent  # the venv's `bascule` and `prefect` scripts
ARGO_KEEP_SECONDS = 600  # Argo's old ReplicaSet outlives every rollback round (compare.py's)
# A rollback round's setup deploy keeps its old color this long, then its run ends on its
# own: long past the timed rollback, short enough not to pile runs up on 2 cores.
KEEP_SECONDS = 45
COMMAND_TIMEOUT = 600
APPS = 10  # deployed at once through the real path, against one alone
IDLE_SECONDS = 30  # each tool's footprint, nothing asked of it
APP_IMAGES = [sample.IMAGE.format(version=v) for v in ("v1", "v2", "v3")]
KUBECTL_IMAGES: dict[Color, str] = {"blue": IMAGES[0], "green": IMAGES[1]}


@dataclass
class RunTimes:
    """Where a run's start went, seconds from the command's start: the run created on the
    server, Running (a worker's process started it), its first task started."""

    created: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    first_step: list[float] = field(default_factory=list)

    def add(self, api: str, run_id: str, asked: float) -> None:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
        body = {"flow_runs": {"id": {"any_": [run_id]}}}
        tasks = httpx.post(f"{api}/task_runs/filter", json=body, timeout=30).json()
        self.created.append(seconds_to_first(asked, [run["created"]]))
        self.running.append(seconds_to_first(asked, [run["start_time"]]))
        self.first_step.append(seconds_to_first(asked, (t["start_time"] for t in tasks)))


def command(api: str, argv: list[str], cwd: Path | None = None) -> None:
    """A `bascule` command against ``api``, to its exit; raises with its output if it failed."""
    done = subprocess.run(
        argv, env=deploys.cli_env(api), cwd=cwd, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    if done.returncode != 0:
        said = done.stdout[-3000:] + done.stderr[-3000:]
        raise RuntimeError(f"{' '.join(argv[:4])}: exit {done.returncode}\n{said}")


def setup(api: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A rollback round's untimed setup deploy, left to run its course (KEEP_SECONDS)."""
    return subprocess.Popen(
        argv, env=deploys.cli_env(api), cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass
class Real:
    """Bascule's real path: its app repository, server, worker and namespace."""

    cluster: Cluster
    api: str
    ns: str
    checkout: Path  # the app's working copy: where its team runs the commands
    fast: str  # the commit whose configuration the timed deploys and rollbacks use
    keep: str  # the commit the rollback rounds' setup deploys use (old color kept)
    setups: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: list[str]) -> None:
        command(self.api, argv, self.checkout)

    def trigger_argv(
        self, image: str, commit: str, label: str, app: str | None = None
    ) -> list[str]:
        return [str(BIN / "bascule"), "trigger", "dev", "--image", image, "--commit", commit,
                "--rerun", f"{label}-{app}" if app else label,
                *(["--app", app] if app else [])]  # fmt: skip

    def triggers(self, apps: list[str], image: str, commit: str, label: str, logs: Path) -> float:
        """``bascule trigger dev --app A`` for each of ``apps``, all started at once; seconds
        from their start until the last one exited (each follows its run to the end)."""
        logs.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        procs = {
            app: subprocess.Popen(
                self.trigger_argv(image, commit, label, app),
                env=deploys.cli_env(self.api),
                cwd=self.checkout,
                stdout=(logs / f"{app}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for app in apps
        }
        for app, proc in procs.items():  # the wall time is the last exit's, whatever the order
            if proc.wait(timeout=COMMAND_TIMEOUT) != 0:
                said = (logs / f"{app}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"bascule trigger --app {app}: exit {proc.returncode}\n{said}")
        return time.monotonic() - started

    def known(self) -> set[str]:
        return {r["id"] for r in deploys.history(self.cluster, self.ns)}

    def newest(self, kind: str, before: set[str]) -> dict[str, Any]:
        found = [r for r in deploys.history(self.cluster, self.ns) if r["id"] not in before]
        (record,) = [r for r in found if r["kind"] == kind]
        if record["result"] != "succeeded":
            raise RuntimeError(f"the {kind} did not succeed: {record}")
        return record


@dataclass
class Process:
    """``bascule deploy`` and ``bascule rollback`` as processes of their own, on a namespace
    of their own: the flow runs in the command's process (no worker)."""

    api: str
    ns: str
    fast: Path  # the configuration of the timed deploys and rollbacks
    keep: Path  # the rollback rounds' setup deploys' (old color kept)
    setups: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, command: str, config: Path, *more: str) -> list[str]:
        return [str(BIN / "bascule"), command, "--dir", str(config), "dev", *more]

    def run(self, argv: list[str]) -> None:
        command(self.api, argv)


def kubectl_pair(cfg: EnvironmentConfig) -> list[dict[str, Any]]:
    """kubectl's rollback baseline: Bascule's two colors of ``cfg``'s app, both running
    (``KUBECTL_IMAGES``), the active Service on blue; a rollback is then one selector
    patch, as Bascule's is."""
    templates = load_templates(cfg.manifests)
    objects = [
        render_deployment(cfg, templates, color=color, image=image, release_id="kubectl")
        for color, image in KUBECTL_IMAGES.items()
    ]
    objects.append(render_service(cfg, templates, role="active", color="blue", image=IMAGES[0]))
    return objects


def patch_selector(cluster: Cluster, cfg: EnvironmentConfig, color: str) -> None:
    """kubectl's rollback: the active Service's selector to ``color``, one process."""
    patch = json.dumps({"spec": {"selector": {LABEL_COLOR: color}}})
    service = service_name(cfg.app, "active")
    cluster.kubectl("-n", cfg.namespace, "patch", "service", service, "-p", patch)


def cli_start(cfg: Path, api: str, rounds: int, rng: random.Random) -> dict[str, list[float]]:
    """``bascule --help``, ``validate`` and ``status`` (against the live cluster), each from
    process start to exit, ``rounds`` times in a shuffled order each round."""
    commands = {
        "cli_help_seconds": ["--help"],
        "cli_validate_seconds": ["validate", "--dir", str(cfg)],
        "cli_status_seconds": ["status", "--dir", str(cfg)],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name in rng.sample(sorted(commands), len(commands)):
            started = time.perf_counter()
            done = subprocess.run(
                [str(BIN / "bascule"), *commands[name]], env=deploys.cli_env(api),
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            times[name].append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"bascule {commands[name][0]}: {done.stderr[-2000:]}")
    return times


@dataclass
class Rounds:
    """What the rounds saw, each list one value per round (in the rounds' order)."""

    real: Tool = field(default_factory=Tool)
    process: Tool = field(default_factory=Tool)
    argo: Tool = field(default_factory=Tool)
    kubectl: Tool = field(default_factory=Tool)
    deploy_runs: RunTimes = field(default_factory=RunTimes)
    rollback_runs: RunTimes = field(default_factory=RunTimes)
    done: dict[str, list[float]] = field(default_factory=dict)
    apps_one: list[float] = field(default_factory=list)  # one app's trigger alone
    apps_wall: list[float] = field(default_factory=list)  # ``APPS`` apps' triggers at once
    idle: dict[str, str] = field(default_factory=dict)  # footprint figures, printed as they are

    def took(self, name: str, asked: float, until: float | None = None) -> None:
        self.done.setdefault(name, []).append((until or time.time()) - asked)


@dataclass
class Bench:
    """The tools, each on its namespace, and the rounds' shuffled order."""

    cluster: Cluster
    real: Real
    process: Process
    argo: Argo
    watch: RolloutWatch
    kubectl_cfg: EnvironmentConfig
    urls: dict[str, str]  # each tool's active Service
    rng: random.Random
    tag: str
    seen: Rounds = field(default_factory=Rounds)
    kubectl_color: Color = "blue"

    def deploy_round(self, i: int) -> list[str]:
        """Both tools deploy the other image, each from a settled node; returns the order."""
        image, old = IMAGES[(i + 1) % 2], IMAGES[i % 2]
        real, seen = self.real, self.seen

        def real_deploy() -> float:
            fresh_start(self.cluster)
            before = real.known()
            asked = time.time()
            real.command(real.trigger_argv(image, real.fast, f"{self.tag}-d{i}"))
            seen.took("real_deploy_done_seconds", asked)
            seen.real.deploy_asked.append((asked, image))
            run = real.newest("deploy", before)["flow_run_id"]
            seen.deploy_runs.add(real.api, run, asked)
            return asked

        def process_deploy() -> float:
            fresh_start(self.cluster)
            asked = time.time()
            self.process.run(self.process.argv("deploy", self.process.fast, "--image", image))
            seen.took("process_deploy_done_seconds", asked)
            seen.process.deploy_asked.append((asked, image))
            return asked

        def argo_deploy() -> float:
            fresh_start(self.cluster)
            asked = time.time()
            self.argo.set_image(image)
            done = self.watch.wait_done(asked, image, alone=True)
            seen.took("argo_deploy_done_seconds", asked, done)
            seen.argo.deploy_asked.append((asked, image))
            return asked

        arms = {
            "real": (real_deploy, seen.real),
            "process": (process_deploy, seen.process),
            "argo": (argo_deploy, seen.argo),
        }
        order = self.rng.sample(sorted(arms), len(arms))
        for tool in order:
            act, who = arms[tool]
            failed = len(who.failures)
            who.deploy_seen.append(who.under_load(self.cluster, self.urls[tool], old, image, act))
            said_failures(who, failed, f"{tool} deploy round {i + 1}")
        return order

    def rollback_round(self, i: int, current: str, other: str) -> list[str]:
        """Each tool moves to ``other`` (untimed), then rolls back to ``current`` while
        ``other``'s old pods still run; kubectl patches its Service to the other color."""
        real, seen = self.real, self.seen

        def real_rollback() -> float:
            before = real.known()
            argv = real.trigger_argv(other, real.keep, f"{self.tag}-r{i}")
            real.setups.append(setup(real.api, argv, real.checkout))
            deploys.wait_phase(self.cluster, real.ns, other, {"done"}, ignore=before)
            answers(self.cluster, self.urls["real"], other)
            before = real.known()
            asked = time.time()
            real.command([str(BIN / "bascule"), "trigger", "dev", "--rollback"])
            seen.took("real_rollback_done_seconds", asked)
            run = real.newest("rollback", before)["flow_run_id"]
            seen.rollback_runs.add(real.api, run, asked)
            return asked

        def process_rollback() -> float:
            before = {r["id"] for r in deploys.history(self.cluster, self.process.ns)}
            argv = self.process.argv("deploy", self.process.keep, "--image", other)
            self.process.setups.append(setup(self.process.api, argv))
            deploys.wait_phase(self.cluster, self.process.ns, other, {"done"}, ignore=before)
            answers(self.cluster, self.urls["process"], other)
            asked = time.time()
            self.process.run(self.process.argv("rollback", self.process.fast))
            seen.took("process_rollback_done_seconds", asked)
            return asked

        def argo_rollback() -> float:
            moved = time.time()
            self.argo.set_image(other)
            self.watch.wait_done(moved, other, alone=False)
            answers(self.cluster, self.urls["argo"], other)
            asked = time.time()
            self.argo.undo()
            done = self.watch.wait_done(asked, current, alone=False)
            seen.took("argo_rollback_done_seconds", asked, done)
            return asked

        to: Color = "green" if self.kubectl_color == "blue" else "blue"

        def kubectl_rollback() -> float:
            asked = time.time()
            patch_selector(self.cluster, self.kubectl_cfg, to)
            seen.took("kubectl_rollback_done_seconds", asked)
            return asked

        arms = {
            "real": (real_rollback, seen.real),
            "process": (process_rollback, seen.process),
            "argo": (argo_rollback, seen.argo),
            "kubectl": (kubectl_rollback, seen.kubectl),
        }
        order = self.rng.sample(sorted(arms), len(arms))
        for tool in order:
            act, who = arms[tool]
            if tool == "kubectl":
                source, target = KUBECTL_IMAGES[self.kubectl_color], KUBECTL_IMAGES[to]
                self.kubectl_color = to
            else:
                source, target = other, current
            url = self.urls[tool]
            failed = len(who.failures)
            who.rollback_seen.append(who.under_load(self.cluster, url, source, target, act))
            said_failures(who, failed, f"{tool} rollback round {i + 1}")
        return order


def apps_rounds(real: Real, commit: str, rounds: int, rng: random.Random, logs: Path) -> Rounds:
    """``APPS`` apps of the dev environment (its own and overlays, all in one namespace,
    served by its one worker), each deployed through the real path: first all from nothing
    (not timed), then per round one app alone and all of them at once, in a shuffled order."""
    apps, seen = app_names(APPS), Rounds()
    serving = dict.fromkeys(apps, APP_IMAGES[0])
    real.triggers(apps, APP_IMAGES[0], commit, "apps-stage", logs / "stage")
    for i in range(rounds):
        for step in rng.sample(["one", "all"], 2):
            chosen = apps[:1] if step == "one" else apps
            # An image none of them serves: one that already serves is not deployed again.
            image = next(im for im in APP_IMAGES if im not in {serving[a] for a in chosen})
            took = real.triggers(chosen, image, commit, f"apps-{i}-{step}", logs / f"{i}-{step}")
            serving.update(dict.fromkeys(chosen, image))
            (seen.apps_one if step == "one" else seen.apps_wall).append(took)
        log(f"apps round {i + 1}: one {seen.apps_one[-1]:.1f} s, {APPS} at once "
            f"{seen.apps_wall[-1]:.1f} s")  # fmt: skip
    return seen


def said_failures(tool: Tool, before: int, where: str) -> None:
    """Logs the requests ``where`` saw fail (those past ``before``), with when and why: a
    failure is a finding to explain, not only a count."""
    for failure in tool.failures[before:]:
        log(f"{where}: failed request {json.dumps(failure)[:300]}")


def namespaces(tag: str) -> tuple[str, str, str, str]:
    """Bascule's real path's, Argo's, kubectl's and Bascule's process's (each with its dev
    environment's ``-dev``)."""
    return f"bench-rpb-{tag}", f"bench-rpa-{tag}", f"bench-rpk-{tag}", f"bench-rpp-{tag}"


def measure(
    cluster: Cluster,
    bindir: Path,
    api: str,
    tmp: Path,
    tag: str,
    rounds: int,
    cli_rounds: int,
    apps_rounds_count: int,
    rng: random.Random,
    server_pid: int,
) -> tuple[Rounds, dict[str, list[float]]]:
    """Sets the three tools up, runs the rounds; returns what they saw and the CLI's times."""
    ns_b, ns_a, ns_k, ns_p = namespaces(tag)
    for ns in (ns_b, ns_a, ns_k, ns_p):
        cluster.create_namespace(f"{ns}-dev")
    ours = identity(cluster, f"{ns_b}-dev", "bascule", tmp)
    ours_p = identity(cluster, f"{ns_p}-dev", "bascule", tmp)
    ctrl = identity(cluster, f"{ns_a}-dev", "argo-controller", tmp)
    cli = identity(cluster, f"{ns_a}-dev", "argo-cli", tmp)
    try:
        # The app's repository: configuration only, two commits (the last is the branch head,
        # which the rollback runs, started without a commit, read).
        repo = workers.Repository.make(tmp / "app")
        keep = merge(MINIMAL, {"rollout": {"scale_down_delay_seconds": KEEP_SECONDS}})
        keep_sha = repo.commit(ns_b, "old color kept", keep, ("dev",))
        fast_sha = repo.commit(ns_b, "checks at their minimum", MINIMAL, ("dev",))
        repo.push()
        registered = deploys.run(api, "register", "--dir", str(repo.work / "deployments"), "dev")
        if registered.returncode != 0:
            raise RuntimeError(f"bascule register: {registered.stdout}{registered.stderr}")
        real = Real(cluster, api, f"{ns_b}-dev", repo.work, fast_sha, keep_sha)

        argo_dir = write_envs(tmp / "rp-argo", ns_a, cli.kubeconfig, MINIMAL, ("dev",))
        argo_cfg = load_environment(argo_dir / "dev.yaml")
        argo = Argo(cluster, bindir, cli, argo_cfg.namespace, argo_cfg.app)
        process = Process(
            api,
            f"{ns_p}-dev",
            write_envs(tmp / "rp-process", ns_p, ours_p.kubeconfig, MINIMAL, ("dev",)),
            write_envs(tmp / "rp-process-keep", ns_p, ours_p.kubeconfig, keep, ("dev",)),
        )
        k_dir = write_envs(tmp / "rp-kubectl", ns_k, cluster.kubeconfig, MINIMAL, ("dev",))
        k_cfg = load_environment(k_dir / "dev.yaml")
        cluster.apply(k_cfg.namespace, *kubectl_pair(k_cfg))
        install_crds(cluster, bindir)
        # The Rollout before its watch (a watch of a missing object ends at once).
        cluster.apply(argo.ns, *rollout_objects(argo_cfg, IMAGES[0]))
        env = {"KUBECONFIG": str(ours.kubeconfig)}
        with (
            # Prefect's default poll: the worker is woken by the run's event, not by tuning.
            workers.bascule_worker(
                api, tmp / "worker.log", "dev", repo.bare, (real.ns,), env, query_seconds=10
            ) as worker,
            running_controller(bindir, ctrl, argo.ns, tmp / "rollouts-controller.log") as argo_c,
            RolloutWatch(cluster, argo.ns, argo.app) as watch,
        ):
            watch.wait_done(0, IMAGES[0], alone=True)
            real.command(real.trigger_argv(IMAGES[0], fast_sha, f"{tag}-first"))
            process.run(process.argv("deploy", process.fast, "--image", IMAGES[0]))
            for color in ("blue", "green"):
                dep = f"deployment/{k_cfg.app}-{color}"
                cluster.kubectl("-n", k_cfg.namespace, "rollout", "status", dep)
            # What each tool costs while nobody deploys: Bascule's server and worker (each a
            # process group: the worker's includes what it started) against Argo's controller.
            log(f"idle footprint, {IDLE_SECONDS} s")
            idle = idle_footprint(
                IDLE_SECONDS,
                prefect_server=lambda: group_usage(server_pid),
                bascule_worker=lambda: group_usage(worker.pid),
                argo_controller=lambda: usage(argo_c.pid)[:2],
            )
            arms = {"real": real.ns, "process": process.ns, "argo": argo.ns}
            urls = {
                tool: deploys.service_url(cluster, ns)
                for tool, ns in {**arms, "kubectl": k_cfg.namespace}.items()
            }
            bench = Bench(cluster, real, process, argo, watch, k_cfg, urls, rng, tag)
            seen = bench.seen
            seen.idle = idle
            log(f"set up; {rounds} deploy rounds")
            with Timeline(cluster) as timeline:
                for i in range(rounds):
                    order = bench.deploy_round(i)
                    log(f"deploy round {i + 1} {order}: real {seen.real.deploy_seen[-1]:.2f} "
                        f"process {seen.process.deploy_seen[-1]:.2f} "
                        f"argo {seen.argo.deploy_seen[-1]:.2f}")  # fmt: skip
            active = service_name(argo_cfg.app, "active")
            for tool, ns in arms.items():
                getattr(seen, tool).split(timeline, ns, active, argo_cfg.replicas)

            argo.scale_down_delay(ARGO_KEEP_SECONDS)
            current, other = IMAGES[rounds % 2], IMAGES[(rounds + 1) % 2]
            log(f"{rounds} rollback rounds")
            for i in range(rounds):
                order = bench.rollback_round(i, current, other)
                log(f"rollback round {i + 1} {order}: real {seen.real.rollback_seen[-1]:.2f} "
                    f"process {seen.process.rollback_seen[-1]:.2f} "
                    f"argo {seen.argo.rollback_seen[-1]:.2f} "
                    f"kubectl {seen.kubectl.rollback_seen[-1]:.2f}")  # fmt: skip

            cli_dir = write_envs(tmp / "rp-cli", ns_b, ours.kubeconfig, MINIMAL, ("dev",))
            cli_times = cli_start(cli_dir, api, cli_rounds, rng)
            for proc in [*real.setups, *process.setups]:  # they end KEEP_SECONDS after done
                if proc.wait(timeout=KEEP_SECONDS + 120) != 0:
                    log(f"a rollback round's setup deploy exited {proc.returncode}")

            apps_sha = repo.commit(
                ns_b, f"{APPS} apps", MINIMAL, ("dev",),
                change=lambda work: write_overlays(work / "deployments", "dev", APPS),
            )  # fmt: skip
            repo.push()
            log(f"{apps_rounds_count} rounds of {APPS} apps")
            apps = apps_rounds(real, apps_sha, apps_rounds_count, rng, tmp / "apps")
            seen.apps_one, seen.apps_wall = apps.apps_one, apps.apps_wall
    finally:
        forget_identities(cluster, ours, ours_p, ctrl, cli)
    return seen, cli_times


# (figure, ours, theirs): ratios of means, each with its paired interval.
RATIOS = (
    ("real_deploy_vs_argo", "real_deploy_seen_seconds", "argo_deploy_seen_seconds"),
    ("real_deploy_done_vs_argo", "real_deploy_done_seconds", "argo_deploy_done_seconds"),
    ("real_deploy_own_vs_argo", "real_deploy_own_seconds", "argo_deploy_own_seconds"),
    ("process_deploy_vs_argo", "process_deploy_seen_seconds", "argo_deploy_seen_seconds"),
    ("real_deploy_vs_process", "real_deploy_seen_seconds", "process_deploy_seen_seconds"),
    ("process_deploy_own_vs_argo", "process_deploy_own_seconds", "argo_deploy_own_seconds"),
    ("real_rollback_vs_argo", "real_rollback_seen_seconds", "argo_rollback_seen_seconds"),
    ("process_rollback_vs_argo", "process_rollback_seen_seconds", "argo_rollback_seen_seconds"),
    ("real_rollback_vs_kubectl", "real_rollback_seen_seconds", "kubectl_rollback_seen_seconds"),
    ("argo_rollback_vs_kubectl", "argo_rollback_seen_seconds", "kubectl_rollback_seen_seconds"),
    ("apps_wall_ratio", "apps_wall_seconds", "apps_one_deploy_seconds"),
)


def figures(seen: Rounds, cli_times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Every figure's rounds, by name, in print order."""
    s = seen
    return {
        "real_deploy_seen_seconds": s.real.deploy_seen,
        "process_deploy_seen_seconds": s.process.deploy_seen,
        "argo_deploy_seen_seconds": s.argo.deploy_seen,
        "real_deploy_done_seconds": s.done["real_deploy_done_seconds"],
        "process_deploy_done_seconds": s.done["process_deploy_done_seconds"],
        "argo_deploy_done_seconds": s.done["argo_deploy_done_seconds"],
        "real_deploy_own_seconds": [split.own for split in s.real.deploy_splits],
        "process_deploy_own_seconds": [split.own for split in s.process.deploy_splits],
        "argo_deploy_own_seconds": [split.own for split in s.argo.deploy_splits],
        "trigger_to_created_seconds": s.deploy_runs.created,
        "trigger_to_running_seconds": s.deploy_runs.running,
        "trigger_to_first_step_seconds": s.deploy_runs.first_step,
        "real_rollback_seen_seconds": s.real.rollback_seen,
        "process_rollback_seen_seconds": s.process.rollback_seen,
        "argo_rollback_seen_seconds": s.argo.rollback_seen,
        "kubectl_rollback_seen_seconds": s.kubectl.rollback_seen,
        "real_rollback_done_seconds": s.done["real_rollback_done_seconds"],
        "process_rollback_done_seconds": s.done["process_rollback_done_seconds"],
        "argo_rollback_done_seconds": s.done["argo_rollback_done_seconds"],
        "kubectl_rollback_done_seconds": s.done["kubectl_rollback_done_seconds"],
        "rollback_to_running_seconds": s.rollback_runs.running,
        "rollback_to_first_step_seconds": s.rollback_runs.first_step,
        "apps_one_deploy_seconds": s.apps_one,
        "apps_wall_seconds": s.apps_wall,
        **cli_times,
    }


def counts(seen: Rounds) -> dict[str, str]:
    """Requests each tool's load driver sent and saw fail, through all its rounds."""
    tools = {"real": seen.real, "process": seen.process, "argo": seen.argo, "kubectl": seen.kubectl}
    return {
        f"{name}_{what}": value
        for name, tool in tools.items()
        for what, value in (
            ("failed_requests", str(len(tool.failures))),
            ("requests_sent", str(tool.sent)),
            ("failure_kinds", failure_kinds(tool.failures)),
        )
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report(rounds_of: dict[str, list[float]], seed: int) -> list[str]:
    """Every figure's lines, then the ratios, then ``cli_start_seconds``: the slowest of the
    three commands by mean, with that command's interval."""
    lines: list[str] = []
    for name, values in rounds_of.items():
        lines += figure_lines(name, values, seed)
    for name, ours, theirs in RATIOS:
        lines += ratio_lines(name, rounds_of[ours], rounds_of[theirs], seed)
    cli = [n for n in rounds_of if n.startswith("cli_")]
    slowest = max(cli, key=lambda n: sum(rounds_of[n]) / len(rounds_of[n]))
    start = figure_lines("cli_start_seconds", rounds_of[slowest], seed)[:3]
    lines += [*start, f"cli_start_command={slowest.removeprefix('cli_').removesuffix('_seconds')}"]
    return lines


def main() -> None:
    import os
    import tempfile
    import uuid

    from tests.support.cluster import start_local
    from tests.support.prefect_server import running_prefect_server, server_database

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15, help="paired rounds of each kind")
    ap.add_argument("--cli-rounds", type=int, default=10)
    ap.add_argument("--apps-rounds", type=int, default=5, help=f"rounds of one app and {APPS}")
    ap.add_argument("--seed", type=int, help="the rounds' order (default: a new one, printed)")
    args = ap.parse_args()
    if min(args.rounds, args.cli_rounds, args.apps_rounds) < 2:
        ap.error("every kind of round needs at least 2: an interval needs two values")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    log(f"seed={seed}")
    started = time.monotonic()
    bindir, cluster, tag = build(), start_local(), uuid.uuid4().hex[:6]
    # On the cluster's PostgreSQL, as bench.apps: ten triggers at once keep a SQLite server
    # answering 503 for over a minute.
    with (
        server_database(cluster) as url,
        running_prefect_server(database_url=url) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            seen, cli_times = measure(
                cluster, bindir, server.api_url, Path(tmp), tag, args.rounds,
                args.cli_rounds, args.apps_rounds, random.Random(seed), server.pid,
            )  # fmt: skip
        finally:
            for ns in namespaces(tag):
                cluster.kubectl("delete", "namespace", f"{ns}-dev", "--wait=false", check=False)
    print(f"realpath_seed={seed}")
    print(f"realpath_rounds={args.rounds}")
    print(f"argo_rollouts_version={bindir.name.removeprefix('argo-rollouts-')}")
    for line in report(figures(seen, cli_times), seed):
        print(line)
    for name, value in {**seen.idle, **counts(seen)}.items():
        print(f"{name}={value}")
    print(f"realpath_wall_seconds={time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
