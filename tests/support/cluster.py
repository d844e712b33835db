"""Test-side handle on a Kubernetes cluster: the local one from tests/cluster, or an
existing one named by BASCULE_TEST_KUBECONFIG (kind, minikube, a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

from bascule.kube import Kube, Obj, Target
from tests.support.load import REQUEST_TIMEOUT

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "cluster"
REPO = CLUSTER_DIR.parents[1]
EXISTING_ENV = "BASCULE_TEST_KUBECONFIG"
# What a load driver must achieve, of the rate asked, and its longest pause: past a
# request's timeout no worker was sending, the driver itself had stopped.
LOAD_FLOOR = 0.8
LOAD_MAX_GAP = REQUEST_TIMEOUT
# What /version of the local cluster's sample-app images answers.
SAMPLE_VERSIONS = ("v1", "v2", "v3")


# The label that makes the API server refuse any pod Pod Security `restricted` does not admit.
RESTRICTED_NAMESPACE = {"pod-security.kubernetes.io/enforce": "restricted"}


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl_bin: str
    netns: str | None  # None for an existing cluster: nothing of ours to enter
    cluster_dir: Path | None

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> str:
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def client(self) -> Kube:
        """An API client for this cluster (the one the flows use)."""
        return Kube(Target(str(self.kubeconfig)))

    def read(self, path: str, **params: str) -> Obj | None:
        """GET ``path`` (bascule.kube's paths) through this process's one kept client; None
        if it does not exist. The tests' reads go here, not to a `kubectl get` process each:
        polled, those processes were a measured share of the suite's CPU."""
        return _reader(self.kubeconfig).get_or_none(path, **params)

    def get(self, path: str, **params: str) -> Obj:
        """As ``read``, for an object that must exist (KubeError otherwise)."""
        return _reader(self.kubeconfig).get(path, **params)

    def create_namespace(self, name: str, timeout: float = 60, restricted: bool = True) -> None:
        """A namespace pods can run in: its ``default`` ServiceAccount, which the controller
        manager adds a moment after the namespace, exists. (`kubectl wait` cannot wait for
        an object to appear: it fails at once while the account is not there yet.) An app
        namespace, as the README asks of them: Pod Security ``restricted`` enforced."""
        labels = RESTRICTED_NAMESPACE if restricted else {}
        meta = {"name": name, "labels": labels}
        self.kubectl(
            "create",
            "-f",
            "-",
            stdin=json.dumps({"kind": "Namespace", "apiVersion": "v1", "metadata": meta}),
        )
        deadline = time.monotonic() + timeout
        while not self.read(f"/api/v1/namespaces/{name}/serviceaccounts/default"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"namespace {name}: no default ServiceAccount after {timeout} s")
            time.sleep(0.2)

    def wait_terminations(self, timeout: float = 60) -> None:
        """Waits until no pod of the cluster is terminating. A pod's teardown (its sandbox
        and network) slows the start of pods created meanwhile on the same node, whatever
        their namespace (bench/README.md), so timed rounds start from a settled node."""
        going = (
            "{range .items[?(@.metadata.deletionTimestamp)]}"
            "{.metadata.namespace} {.metadata.name} {end}"
        )
        deadline = time.monotonic() + timeout
        while words := self.kubectl("get", "pods", "-A", "-o", f"jsonpath={going}").split():
            for ns, pod in zip(words[::2], words[1::2], strict=True):
                left = max(1.0, deadline - time.monotonic())  # `kubectl wait` watches it go
                wait = ("wait", "--for=delete", f"--timeout={left:.0f}s", f"pod/{pod}")
                self.kubectl("-n", ns, *wait, timeout=left + 30)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args))

    def apply(self, namespace: str, *objects: dict) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=doc)

    def http_get(self, url: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET a URL from inside the cluster's network namespace (Service and pod IPs)."""
        code = (
            "import sys,urllib.request,urllib.error\n"
            "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2]))\n"
            " print(r.status);print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code);print(e.read().decode())\n"
        )
        argv = self.in_netns([sys.executable, "-c", code, url, str(timeout)])
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
        if res.returncode != 0:
            raise ConnectionError(f"GET {url}: {res.stderr.strip()[-500:]}")
        status, _, body = res.stdout.partition("\n")
        return int(status), body

    def in_netns(self, argv: list[str]) -> list[str]:
        """The command line that runs argv inside the cluster's network namespace."""
        if self.netns is None:
            raise RuntimeError("an existing cluster has no network namespace of ours")
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]


@cache
def _reader(kubeconfig: Path) -> Kube:
    return Kube(Target(str(kubeconfig)))


def cluster_env(name: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    if name:
        env["BASCULE_CLUSTER_NAME"] = name
    env.update(extra)
    return env


def start_local(env: dict[str, str] | None = None) -> Cluster:
    """Runs tests/cluster/up.sh (reusing a running cluster) and returns its handle."""
    env = env or cluster_env()
    res = subprocess.run(
        [str(CLUSTER_DIR / "up.sh")], capture_output=True, text=True, env=env, timeout=3600
    )
    if res.returncode != 0:
        raise RuntimeError(f"cluster-up failed ({res.returncode}):\n{res.stderr[-4000:]}")
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("KUBECONFIG="), last
    kubeconfig = Path(last.split("=", 1)[1])
    bindir = subprocess.run(
        [str(CLUSTER_DIR / "build.sh")], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    name = env.get("BASCULE_CLUSTER_NAME", "bascule")
    return Cluster(kubeconfig, f"{bindir}/kubectl", name, kubeconfig.parent)


def existing() -> Cluster | None:
    path = os.environ.get(EXISTING_ENV)
    if not path:
        return None
    return Cluster(Path(path), os.environ.get("BASCULE_KUBECTL", "kubectl"), None, None)


@dataclass
class LoadReport:
    samples: list[dict]
    started: float  # when the driver began and stopped sending (epoch seconds)
    stopped: float
    requested_rps: float
    # The same on the monotonic clock (samples' "m"): the driver's pace is judged on it, so a
    # step of the wall clock is not taken for a stall.
    started_m: float
    stopped_m: float

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def failures(self) -> list[dict]:
        return [s for s in self.samples if not s["ok"]]

    def versions(self, since: float = 0.0) -> Counter[str]:
        return Counter(s["version"] for s in self.samples if s["ok"] and s["t"] >= since)

    def seconds(self) -> float:
        return self.stopped_m - self.started_m

    def rate(self) -> float:
        """Requests per second over the whole time the driver ran."""
        return self.total / max(self.seconds(), 1e-9)

    def longest_gap(self) -> float:
        """The longest time without a request starting, ends included."""
        times = sorted(s["m"] for s in self.samples)
        return max(b - a for a, b in pairwise([self.started_m, *times, self.stopped_m]))

    def assert_sustained(self, floor: float = LOAD_FLOOR, max_gap: float = LOAD_MAX_GAP) -> None:
        """The driver really sent the load, all along: ``failures == []`` means nothing
        from a driver that was starved, or stalled just when traffic moved."""
        seconds = self.seconds()
        step = (self.stopped - self.started) - seconds
        summary = (
            f"{self.total} requests in {seconds:.1f} s = {self.rate():.0f}/s "
            f"(asked {self.requested_rps:.0f}/s), longest gap {self.longest_gap():.2f} s"
            + (f", wall clock stepped {step:+.1f} s" if abs(step) >= 0.5 else "")
        )
        print(f"load: {summary}")
        assert self.total >= floor * self.requested_rps * seconds, f"too few: {summary}"
        assert self.rate() >= floor * self.requested_rps, f"too slow: {summary}"
        assert self.longest_gap() <= max_gap, f"stalled: {summary}"


class LoadDriver:
    """Continuous HTTP load at a URL from inside the cluster's network namespace; from a
    /version URL, an answer naming none of ``versions`` is a failure."""

    def __init__(
        self,
        cluster: Cluster,
        url: str,
        versions: tuple[str, ...] = SAMPLE_VERSIONS,
        rps: float = 120,
        workers: int = 16,
    ) -> None:
        if cluster.netns is None:
            import pytest

            pytest.skip("the load driver runs inside the local cluster's network namespace")
        self.rps = rps
        tag = uuid.uuid4().hex[:8]
        base = Path(os.environ.get("TMPDIR", "/tmp"))
        self.stop_file = base / f"bascule-load-{tag}.stop"
        self.out = base / f"bascule-load-{tag}.json"
        argv = [
            sys.executable,
            "-m",
            "tests.support.load",
            "--url",
            url,
            "--rps",
            str(rps),
            "--workers",
            str(workers),
            "--versions",
            ",".join(versions),
            "--stop-file",
            str(self.stop_file),
            "--out",
            str(self.out),
            "--duration",
            "900",
        ]
        self.proc = subprocess.Popen(cluster.in_netns(argv), cwd=REPO)

    def stop(self) -> LoadReport:
        self.stop_file.touch()
        self.proc.wait(timeout=60)
        data = json.loads(self.out.read_text())
        self.stop_file.unlink(missing_ok=True)
        self.out.unlink(missing_ok=True)
        return LoadReport(
            data["samples"], data["started"], data["stopped"], self.rps,
            data["started_m"], data["stopped_m"],
        )  # fmt: skip


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
