"""The local cluster is real: a Ready node, pods on containerd, Services through kube-proxy."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import sample
from tests.support.cluster import (
    CLUSTER_DIR,
    Cluster,
    LoadDriver,
    cluster_env,
    start_local,
    wait_for,
)

pytestmark = pytest.mark.cluster


def service_ip(cluster: Cluster, ns: str, name: str) -> str:
    return cluster.get_json("-n", ns, "service", name)["spec"]["clusterIP"]


def reachable(cluster: Cluster, url: str) -> bool:
    try:
        return cluster.http_get(url)[0] == 200
    except ConnectionError:
        return False


def test_node_is_ready(cluster: Cluster) -> None:
    nodes = cluster.client().get("/api/v1/nodes")["items"]
    assert len(nodes) >= 1
    ready = {
        n["metadata"]["name"]: next(
            c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"
        )
        for n in nodes
    }
    assert "True" in ready.values(), ready


def assert_logs_in_own_directory(cluster: Cluster, namespace: str) -> None:
    """The pods' logs are under the cluster's own state directory: a kubelet deletes the log
    directories of pods it does not know, so in the shared /var/log/pods two clusters on one
    machine (the suite's and a throwaway one, or the demo's) deleted each other's."""
    assert cluster.cluster_dir is not None
    for pod in cluster.get_json("-n", namespace, "pods")["items"]:
        meta = pod["metadata"]
        name = f"{namespace}_{meta['name']}_{meta['uid']}"
        assert (cluster.cluster_dir / "pod-logs" / name).is_dir(), name
        assert not (Path("/var/log/pods") / name).exists(), name


def test_three_replicas_of_v1_serve_through_a_service(cluster: Cluster, namespace: str) -> None:
    cluster.apply(namespace, sample.deployment("web", "v1", replicas=3), sample.service("web"))
    cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Available", "deployment/web", "--timeout=120s"
    )
    status = cluster.get_json("-n", namespace, "deployment", "web")["status"]
    assert status["availableReplicas"] == 3
    if cluster.netns is None:
        pytest.skip("Service traffic from the host needs the local cluster's namespace")
    ip = service_ip(cluster, namespace, "web")
    wait_for(lambda: reachable(cluster, f"http://{ip}/version"), 30, what="kube-proxy rules")
    pods = set()
    for _ in range(30):
        code, body = cluster.http_get(f"http://{ip}/version")
        assert code == 200, body
        answer = json.loads(body)
        assert answer["version"] == "v1"
        pods.add(answer["pod"])
    # kube-proxy spreads new connections over the endpoints.
    assert len(pods) >= 2, pods
    assert_logs_in_own_directory(cluster, namespace)


def test_crash_on_start_ends_in_crashloopbackoff(cluster: Cluster, namespace: str) -> None:
    cluster.apply(namespace, sample.deployment("crash", env={"CRASH_ON_START": "1"}))

    def waiting_reason() -> str | None:
        pods = cluster.get_json("-n", namespace, "pods", "-l", "app=crash")["items"]
        for pod in pods:
            for cs in pod.get("status", {}).get("containerStatuses", []):
                reason = cs.get("state", {}).get("waiting", {}).get("reason")
                if reason == "CrashLoopBackOff":
                    return reason
        return None

    assert wait_for(waiting_reason, timeout=90, what="CrashLoopBackOff") == "CrashLoopBackOff"


def test_pod_failing_readiness_gets_no_traffic(cluster: Cluster, namespace: str) -> None:
    good = sample.deployment("good")
    bad = sample.deployment("bad", env={"FAIL_READINESS": "1"})
    for d in (good, bad):  # both carry the label the Service selects
        d["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    cluster.apply(namespace, good, bad, sample.service("web", selector={"tier": "web"}))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Available", "deployment/good")

    def endpoints() -> list[dict] | None:
        slices = cluster.get_json(
            "-n", namespace, "endpointslices", "-l", "kubernetes.io/service-name=web"
        )["items"]
        eps = [e for s in slices for e in s.get("endpoints") or []]
        return eps if len(eps) == 2 else None

    eps = wait_for(endpoints, timeout=60, what="both pods listed in the EndpointSlice")
    by_pod = {e["targetRef"]["name"].split("-")[0]: e["conditions"]["ready"] for e in eps}
    assert by_pod == {"good": True, "bad": False}
    if cluster.netns is None:
        return
    ip = service_ip(cluster, namespace, "web")
    wait_for(lambda: reachable(cluster, f"http://{ip}/version"), 30, what="kube-proxy rules")
    answered = {json.loads(cluster.http_get(f"http://{ip}/version")[1])["pod"] for _ in range(20)}
    assert all(p.startswith("good-") for p in answered), answered


@pytest.mark.alone
def test_load_driver_sees_every_request(cluster: Cluster, namespace: str) -> None:
    if cluster.netns is None:
        pytest.skip("the load driver runs inside the local cluster's namespace")
    cluster.apply(namespace, sample.deployment("web", "v1", replicas=2), sample.service("web"))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Available", "deployment/web")
    ip = service_ip(cluster, namespace, "web")
    wait_for(lambda: reachable(cluster, f"http://{ip}/version"), 30, what="kube-proxy rules")
    load = LoadDriver(cluster, f"http://{ip}/version", ("v1",), rps=100)
    time.sleep(5)
    report = load.stop()
    report.assert_sustained()
    assert report.total >= 400, report.total
    assert report.failures == []
    assert report.versions() == {"v1": report.total}


# Run in a pod: what each name resolves to (or the error), whether each HOST:PORT accepts
# a TCP connection, and the pod's resolv.conf.
RESOLVE = """
import json, socket, sys
names, connects = sys.argv[1].split(), sys.argv[2].split()
def address(name):
    try:
        return socket.gethostbyname(name)
    except OSError as exc:
        return f"error: {exc}"
def connects_to(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return "ok"
    except OSError as exc:
        return f"error: {exc}"
print(json.dumps({
    "addresses": {n: address(n) for n in names},
    "connects": {t: connects_to(t) for t in connects},
    "resolv.conf": open("/etc/resolv.conf").read(),
}))
"""


def test_pods_resolve_services_by_name(cluster: Cluster, namespace: str) -> None:
    """Cluster DNS: a pod finds a Service of its namespace by its short and its full name,
    the node's PostgreSQL as postgres.db, and names outside the cluster not at all."""
    assert_pods_resolve_by_name(cluster, namespace)


def assert_pods_resolve_by_name(cluster: Cluster, namespace: str) -> None:
    cluster.apply(namespace, sample.service("web"))
    web = service_ip(cluster, namespace, "web")
    names = ["web", f"web.{namespace}.svc.cluster.local", "kubernetes.default", "example.com"]
    connects = []
    if cluster.cluster_dir is not None:  # tests/cluster's own Service for its PostgreSQL
        names.append("postgres.db")
        connects.append("postgres.db:5432")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "resolve"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    **sample.pod_container("v1"),
                    "command": ["python3", "-c", RESOLVE, " ".join(names), " ".join(connects)],
                    "readinessProbe": None,
                }
            ],
        },
    }
    cluster.apply(namespace, pod)
    cluster.kubectl(
        "-n",
        namespace,
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/resolve",
        "--timeout=60s",
    )
    seen = json.loads(cluster.kubectl("-n", namespace, "logs", "pod/resolve"))

    dns_ip = service_ip(cluster, "kube-system", "kube-dns")
    assert f"nameserver {dns_ip}" in seen["resolv.conf"], seen["resolv.conf"]
    addresses = seen["addresses"]
    assert addresses["web"] == addresses[f"web.{namespace}.svc.cluster.local"] == web, addresses
    assert addresses["kubernetes.default"] == service_ip(cluster, "default", "kubernetes")
    assert addresses["example.com"].startswith("error:"), addresses  # nothing is forwarded
    if connects:
        assert addresses["postgres.db"] == service_ip(cluster, "db", "postgres"), addresses
        assert seen["connects"] == {"postgres.db:5432": "ok"}, seen["connects"]
    events = cluster.get_json(
        "-n", namespace, "events", "--field-selector", "involvedObject.name=resolve"
    )["items"]
    assert "MissingClusterDNS" not in {e["reason"] for e in events}, events


def assert_dns_added_on_reuse(cluster: Cluster, env: dict[str, str]) -> None:
    """A running cluster as an up.sh from before cluster DNS left it (no CoreDNS, no kube-dns
    or postgres.db Service, kubelet without clusterDNS) gets all of it from the next up.sh,
    which restarts kubelet alone: a pod started before keeps running, new pods resolve names;
    the up.sh after that changes nothing. (Run on the throwaway cluster of the last test,
    which saves starting one more.)"""
    state = cluster.cluster_dir
    assert state is not None
    pids = state / "pids"
    coredns = int((pids / "coredns").read_text())
    subprocess.run(["kill", "-TERM", str(coredns)], check=True)
    wait_for(lambda: not running(coredns), 10, what="CoreDNS to stop")
    (pids / "coredns").unlink()
    (state / "pki" / "coredns.crt").unlink()
    kubelet_yaml = state / "kubelet.yaml"
    lines = kubelet_yaml.read_text().splitlines(keepends=True)
    older = ("cluster", "podLogsDir")
    kubelet_yaml.write_text("".join(x for x in lines if not x.startswith(older)))
    cluster.kubectl("-n", "kube-system", "delete", "service", "kube-dns")
    cluster.kubectl("-n", "db", "delete", "service", "postgres")
    cluster.create_namespace("before")
    keep = {"name": "keep"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": keep}
    cluster.apply("before", pod | {"spec": {"containers": [sample.pod_container("v1")]}})
    cluster.kubectl("-n", "before", "wait", "--for=condition=Ready", "pod/keep", "--timeout=1m")
    (container,) = cluster.get_json("-n", "before", "pod", "keep")["status"]["containerStatuses"]
    kubelet = int((pids / "kubelet").read_text())

    added = subprocess.run(
        [str(CLUSTER_DIR / "up.sh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert added.returncode == 0, added.stderr
    assert "adding cluster DNS" in added.stderr, added.stderr
    assert int((pids / "kubelet").read_text()) != kubelet and not running(kubelet)
    assert running(int((pids / "coredns").read_text()))
    assert "clusterDNS:" in kubelet_yaml.read_text()
    assert f'podLogsDir: "{state / "pod-logs"}"' in kubelet_yaml.read_text()
    kept = cluster.get_json("-n", "before", "pod", "keep")["status"]
    (now,) = kept["containerStatuses"]
    assert kept["phase"] == "Running", kept
    assert (now["containerID"], now["restartCount"]) == (container["containerID"], 0), now
    cluster.create_namespace("after")
    assert_pods_resolve_by_name(cluster, "after")
    assert_logs_in_own_directory(cluster, "after")

    again = subprocess.run(
        [str(CLUSTER_DIR / "up.sh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0 and "adding" not in again.stderr, again.stderr


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed process waiting for its parent is gone already)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cluster_processes(cluster_dir: Path) -> list[int]:
    """Pids whose command line or cwd mention the cluster's state directory."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(cluster_dir) in cmd and running(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.alone
@pytest.mark.last
def test_cluster_down_leaves_nothing_behind(tmp_path: Path) -> None:
    """A second, throwaway cluster: started, stripped of its DNS and given it again by up.sh
    on reuse, broken (SIGKILL), started again over the stale remains, then taken down; no
    process, mount, cgroup or namespace of it may be left."""
    name = "bascule-td"
    env = cluster_env(name, BASCULE_API_PORT="16543", BASCULE_PG_PORT="15532")
    first = start_local(env)
    assert first.cluster_dir is not None
    assert_dns_added_on_reuse(first, env)
    pids_dir = first.cluster_dir / "pids"
    kubelet_pid = int((pids_dir / "kubelet").read_text())
    supervisor = int((pids_dir / "supervisor").read_text())
    subprocess.run(["kill", "-KILL", str(kubelet_pid), str(supervisor)], check=True)
    second = start_local(env)  # must clean up the half-dead cluster, not trip over it
    second.kubectl("wait", "--for=condition=Ready", "node/bascule-td-node", "--timeout=60s")
    recorded = [int(p.read_text()) for p in pids_dir.iterdir()]

    subprocess.run([str(CLUSTER_DIR / "down.sh")], env=env, check=True, timeout=120)

    assert not [p for p in recorded if running(p)]
    assert cluster_processes(second.cluster_dir) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(second.cluster_dir) not in mounts
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in netns.split()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{name}"))
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{name}-system"))
    assert not second.cluster_dir.exists()
