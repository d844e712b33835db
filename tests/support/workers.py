"""Bascule's prefect.yaml registered on a Prefect server and served by a real process worker,
as a team runs it; and a deploy through it killed right after the switch, to measure how
long the automatic recovery takes to put the old version back."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from bascule.runpolicy import kubernetes_pool_name
from tests.support import deploys
from tests.support.cluster import REPO, Cluster, LoadDriver, LoadReport, wait_for
from tests.support.envs import write_envs


def prefect(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env=deploys.cli_env(api),
        timeout=300,
    )


def register(
    api: str,
    prefect_file: Path,
    schedules: list[Any] | None = None,
    only: tuple[str, ...] = (),
) -> None:
    """prefect.yaml's deployments (and the automations of its triggers), as they are: their
    environments' pools made first; scheduled ones get ``schedules`` instead of theirs, or
    none. ``only`` ("flow/name", ...): those deployments alone, quicker to register."""
    spec: dict[str, Any] = yaml.safe_load((REPO / "prefect.yaml").read_text())
    if only:
        spec["deployments"] = [
            dep
            for dep in spec["deployments"]
            if f"{dep['entrypoint'].rsplit(':', 1)[1]}/{dep['name']}" in only
        ]
        assert len(spec["deployments"]) == len(only), f"not all of {only} in prefect.yaml"
    for dep in spec["deployments"]:
        if dep.get("schedules"):
            dep["schedules"] = schedules or []
    prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    # `prefect deploy` refuses a deployment on a missing pool.
    pools = {dep["work_pool"]["name"] for dep in spec["deployments"]}
    kubernetes = pools & {
        kubernetes_pool_name(dep["parameters"]["environment"]) for dep in spec["deployments"]
    }
    for pool in kubernetes:
        kubernetes_pool(api, pool)
    for pool in pools - kubernetes:
        bascule_pool(api, pool)
    res = prefect(api, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def bascule_pool(api: str, name: str) -> None:
    """A work pool of Bascule's worker type, with its default template, as its worker makes
    it (made here so deployments can be registered before the worker starts)."""
    from bascule.worker import WORKER_TYPE, BasculeWorker

    made = httpx.post(
        f"{api}/work_pools/",
        json={
            "name": name,
            "type": WORKER_TYPE,
            "base_job_template": BasculeWorker.get_default_base_job_template(),
        },
        timeout=30,
    )
    if made.status_code != 409:
        made.raise_for_status()


def pool_reread(api: str, pool: str) -> None:
    """Waits until every worker of ``pool`` has the pool as it is now (after an edit through
    the API). Each sync, a worker reads its pool (or has it pushed over its channel), then
    beats (prefect/workers/_worker_channel/_sync.py): a beat later than a beat later than
    the edit comes after a read of it."""
    edited = _at(httpx.get(f"{api}/work_pools/{pool}", timeout=30).json()["updated"])

    def beats() -> list[datetime]:
        found = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=30)
        return [_at(w["last_heartbeat_time"]) for w in found.json()]

    def all_after(moment: datetime) -> datetime | None:
        seen = beats()
        return min(seen) if seen and min(seen) > moment else None

    first = wait_for(lambda: all_after(edited), 60, interval=0.3, what=f"{pool}'s workers to beat")
    wait_for(lambda: all_after(first), 60, interval=0.3, what=f"{pool}'s workers to beat again")


def _at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    return subprocess.run(
        ["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass(frozen=True)
class Repository:
    """An app team's repository, as the environments' workers clone it: a bare repository,
    and a working copy commits are made in."""

    bare: Path
    work: Path

    @staticmethod
    def make(directory: Path) -> Repository:
        repo = Repository(directory / "bascule.git", directory / "work")
        directory.mkdir(parents=True, exist_ok=True)
        git(directory, "init", "-q", "--bare", "-b", "main", str(repo.bare))
        git(directory, "init", "-q", "-b", "main", str(repo.work))
        return repo

    def commit(
        self,
        namespace: str,
        message: str,
        overrides: dict[str, Any] | None = None,
        environments: tuple[str, ...] = ("dev", "staging", "production"),
        change: Callable[[Path], None] | None = None,
        author: str = "test <test@example.invalid>",
    ) -> str:
        """Configurations for ``namespace`` (tests.support.envs, without a kubeconfig: a run
        uses its worker's), committed; ``change`` edits the working copy before. Returns the
        commit. No code: the workers run their own installed Bascule."""
        write_envs(self.work / "deployments", namespace, None, overrides, environments)
        # The Roles preflight checks against ship with the configuration.
        shutil.copytree(
            REPO / "deployments" / "rbac", self.work / "deployments" / "rbac", dirs_exist_ok=True
        )
        if change is not None:
            change(self.work)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "--author", author, "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, branch: str = "main") -> None:
        git(self.work, "push", "-q", "--force", str(self.bare), f"HEAD:refs/heads/{branch}")


@dataclass(frozen=True)
class OsUser:
    """An operating-system user of its own for a worker, as the README tells users to run
    each environment's worker: a run's code then cannot read another worker's files or
    processes. A numeric id, no account needed; its home holds its credentials (0600).
    ``python``: an interpreter that user can run, with this checkout's packages on
    ``pythonpath`` (the venv's own may live under a home only its owner can enter)."""

    uid: int
    home: Path
    python: str
    pythonpath: str

    def prefix(self) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]

    @property
    def gid(self) -> int:
        return pwd.getpwuid(self.uid).pw_gid

    def own(self, path: Path) -> Path:
        os.chown(path, self.uid, self.gid)
        return path

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "PREFECT_HOME": str(self.home / ".prefect"),
            "PYTHONPATH": self.pythonpath,
        }


def os_user(name: str, base: Path) -> OsUser | None:
    """The system user ``name`` (made if missing; ssh-keygen, which verifies approvals,
    wants a passwd entry) with a home under ``base``, if this process may switch users and
    such a user can run Bascule from here, and start processes as the worker does; else
    None."""
    if os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("useradd")):
        return None
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--user-group", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            return None
        uid = pwd.getpwnam(name).pw_uid
    home = base / f"home-{name}"
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, uid, pwd.getpwuid(uid).pw_gid)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])
    for python in (sys.executable, f"/usr/bin/{version}"):
        user = OsUser(uid, home, python, packages)
        probe = subprocess.run(
            [*user.prefix(), python, "-c", _PROBE],
            env={**os.environ, **user.env()},
            cwd=home,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if probe.returncode == 0:
            return user
    return None


# What a worker does as its user: import Bascule and Prefect, start its own interpreter.
_PROBE = (
    "import subprocess, sys; import bascule.worker, prefect; "
    "subprocess.run([sys.executable, '-c', ''], check=True)"
)


# The xdist group of the tests whose workers serve the session Prefect server's shared pools
# (bascule-staging, bascule-dev): run one after another, each test's worker takes only its
# own runs. A test with an environment of its own (bascule register ENV --like staging)
# needs no group.
SHARED_POOLS = "session-server-shared-pools"


@contextlib.contextmanager
def bascule_worker(
    api: str,
    log: Path,
    environment: str,
    repository: Path | str,
    namespaces: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    user: OsUser | None = None,
    app: str | None = None,
    query_seconds: float = 2,
) -> Iterator[subprocess.Popen[bytes]]:
    """``bascule worker ENVIRONMENT`` polling every ``query_seconds`` (its pool's template
    every 2 s, so an edit through the API reaches it soon), stopped by its group; ``env`` adds
    to its environment (its credentials: KUBECONFIG, secret sources); ``user``: run as that
    user; ``app``: one app's worker (``--app``)."""
    options = [f"--namespace={ns}" for ns in namespaces] + (["--app", app] if app else [])
    env = {
        **deploys.cli_env(api),
        "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds),
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
        # Its repository's mirror beside its log, not in this machine's cache for good (a
        # user's worker keeps it in that user's home).
        **(user.env() if user else {"XDG_CACHE_HOME": str(log.parent / "worker-cache")}),
        **(env or {}),
    }
    command = [user.python if user else sys.executable, "-m", "bascule.cli", "worker", environment]
    with spawned(
        [
            *(user.prefix() if user else []),
            *command,
            "--repository",
            str(repository),
            *options,
            "--name",
            f"{environment}-test",
        ],
        log,
        env,
        user.home if user else log.parent,
    ) as proc:
        yield proc


def kubernetes_pool(api: str, name: str, template: dict[str, Any] | None = None) -> None:
    """An environment's Kubernetes work pool ``name`` (bascule/workpool.py): made, or given
    ``template`` if it is there already; without one, made with prefect-kubernetes' default
    if missing."""
    from prefect_kubernetes.worker import KubernetesWorker

    made = httpx.post(
        f"{api}/work_pools/",
        json={
            "name": name,
            "type": "kubernetes",
            "base_job_template": template or KubernetesWorker.get_default_base_job_template(),
        },
        timeout=30,
    )
    if made.status_code == 409 and template is not None:
        made = httpx.patch(
            f"{api}/work_pools/{name}", json={"base_job_template": template}, timeout=30
        )
    if made.status_code != 409:
        made.raise_for_status()


@contextlib.contextmanager
def spawned(
    command: list[str], log: Path, env: dict[str, str], cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` (a worker) in ``cwd``, in a session of its own, its output in ``log``;
    stopped by its group."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def run_process(api: str, worker: subprocess.Popen[bytes], flow_run_id: str) -> int:
    """The pid of the process executing ``flow_run_id``, as its worker told Prefect
    (infrastructure_pid): forked by the worker's fork server, or, when that could not,
    the worker's own child."""
    pid = infrastructure_pid(api, flow_run_id)
    parent = parent_pid(pid)
    assert worker.pid in (parent, parent_pid(parent)), f"{pid} is not a run of {worker.pid}"
    return pid


def infrastructure_pid(api: str, flow_run_id: str) -> int:
    run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()
    assert run.get("infrastructure_pid"), f"flow run {flow_run_id} has no process yet: {run}"
    return int(run["infrastructure_pid"])


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def fork_server(worker_pid: int) -> tuple[int, Path]:
    """The pid and socket of the fork server the worker ``worker_pid`` started
    (bascule/forkserver.py): the process among its children whose argv has the flag."""
    from bascule.forkserver import FORK_SERVER_FLAG, SOCKET_NAME

    flag = FORK_SERVER_FLAG.encode()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or parent_pid(int(entry.name)) != worker_pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if flag in argv:
            return int(entry.name), Path(argv[argv.index(flag) + 1].decode()) / SOCKET_NAME
    raise LookupError(f"worker {worker_pid} has no fork server")


def forked_by_fork_server(pid: int) -> bool:
    """Whether ``pid``'s parent is a worker's fork server (bascule/forkserver.py)."""
    from bascule.forkserver import FORK_SERVER_FLAG

    argv = Path(f"/proc/{parent_pid(pid)}/cmdline").read_bytes().split(b"\0")
    return FORK_SERVER_FLAG.encode() in argv


@dataclass(frozen=True)
class CrashRecovery:
    seconds: float  # from the SIGKILL until only the old version answers
    killed: dict[str, Any]  # the killed release's record, once reconciled
    report: LoadReport  # which version answered when (a few requests a second)
    killed_at: float


def kill_after_switch(
    cluster: Cluster,
    api: str,
    namespace: str,
    worker: subprocess.Popen[bytes],
    image: str,
    old_version: str,
    timeout: float = 180,
) -> CrashRecovery:
    """Starts a staging deploy of ``image`` through the worker, SIGKILLs its process once the
    history says "switched", and waits, doing nothing else, until the killed release is
    reconciled; then times the return to ``old_version`` from what a light poller saw."""
    seen = {r["id"] for r in deploys.history(cluster, namespace)}
    poller = LoadDriver(cluster, deploys.service_url(cluster, namespace), rps=5, workers=1)
    started = prefect(api, "deployment", "run", "deploy/staging", "--param", f"image={image}")
    assert started.returncode == 0, started.stdout + started.stderr
    switched = deploys.wait_phase(cluster, namespace, image, {"switched"}, ignore=seen)
    os.kill(run_process(api, worker, switched["flow_run_id"]), signal.SIGKILL)
    killed_at = time.time()

    def reconciled() -> dict[str, Any] | None:
        record = next(r for r in deploys.history(cluster, namespace) if r["id"] == switched["id"])
        return record if record["phase"] == "done" else None

    killed = wait_for(reconciled, timeout, interval=0.5, what="the killed release reconciled")
    time.sleep(3)  # who answers a little longer, to see the old version stays
    report = poller.stop()
    after = [s for s in report.samples if s["t"] > killed_at]
    last_other = max((s["t"] for s in after if s["version"] != old_version), default=killed_at)
    old_only = min((s["t"] for s in after if s["t"] > last_other), default=float("inf"))
    return CrashRecovery(old_only - killed_at, killed, report, killed_at)
