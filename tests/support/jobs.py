"""Flows as Kubernetes Jobs in tests: the flow image, the session's Prefect server as pods
reach it, the Kubernetes work pool and a real ``prefect worker`` of type kubernetes.

Pods reach the server (a host process on loopback) the way they reach the node's PostgreSQL:
at the node's address inside the cluster's network namespace, where an nsforward started in
that namespace relays each connection back to the host's loopback (its ``-netns`` is this
process's own namespace), behind a Service with a hand-written EndpointSlice, so flows use a
name (``prefect-<port>.bascule-system``). Nothing leaves loopback or the cluster's namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bascule.cli.workpool import template as workpool_template
from bascule.workpool import POOL, JobSettings
from tests.support import processes, workers
from tests.support.cluster import CLUSTER_DIR, Cluster
from tests.support.postgres import NODE_IP
from tests.support.prefect_server import prefect_server  # noqa: F401  (a fixture used here)

SYSTEM_NAMESPACE = "bascule-system"
SERVICE_PORT = 4200


@dataclass(frozen=True)
class PodReachable:
    host_url: str  # the session's server, as tests and the worker reach it
    pod_url: str  # the same server, as pods reach it


def flow_image(cluster: Cluster, commit: str = "HEAD") -> str:
    """tests/cluster/flow-image.sh: the flow image at ``commit``, imported into the cluster
    (cached: seconds when it is there already)."""
    env = {**os.environ, "BASCULE_CLUSTER_NAME": cluster.netns or "bascule"}
    res = subprocess.run(
        [str(CLUSTER_DIR / "flow-image.sh"), commit],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()[-1]


def _host_service(cluster: Cluster, name: str, port: int) -> None:
    """A Service ``name`` in SYSTEM_NAMESPACE whose one endpoint is the node's address."""
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
            "spec": {
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": port}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-node",
                "namespace": SYSTEM_NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "bascule.local",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    ]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    cluster.kubectl("apply", "-f", "-", stdin=doc)


@contextlib.contextmanager
def reachable_from_pods(cluster: Cluster, api_url: str) -> Iterator[PodReachable]:
    """The server at ``api_url`` (http://127.0.0.1:PORT/api) reachable from pods too."""
    if cluster.netns is None:
        pytest.skip("pods reach the host only in the local cluster (its network namespace)")
    port = urlsplit(api_url).port
    assert port is not None, api_url
    nsforward = Path(cluster.kubectl_bin).parent / "nsforward"
    ready = Path(f"/tmp/bascule-prefect-forward-{port}.ready")
    ready.unlink(missing_ok=True)
    argv = cluster.in_netns(
        [
            str(nsforward),
            "-netns",
            f"/proc/{os.getpid()}/ns/net",
            "-ready-file",
            str(ready),
            "-map",
            f"{NODE_IP}:{port}=127.0.0.1:{port}",
        ]
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"nsforward exited: {proc.communicate()[1].decode()}")
            assert time.monotonic() < deadline, "nsforward not ready after 30 s"
            time.sleep(0.1)
        name = f"prefect-{port}"
        _host_service(cluster, name, port)
        yield PodReachable(api_url, f"http://{name}.{SYSTEM_NAMESPACE}:{SERVICE_PORT}/api")
        cluster.kubectl("-n", SYSTEM_NAMESPACE, "delete", "service", name, check=False)
        cluster.kubectl(
            "-n", SYSTEM_NAMESPACE, "delete", "endpointslice", f"{name}-node", check=False
        )
    finally:
        processes.stop(proc)  # type: ignore[arg-type]
        ready.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def pod_prefect(cluster: Cluster, prefect_server: str) -> Iterator[PodReachable]:  # noqa: F811
    """The session's Prefect server, reachable from the host and from pods."""
    with reachable_from_pods(cluster, prefect_server) as server:
        yield server


def create_pool(server: PodReachable, image: str, namespace: str) -> None:
    """The Kubernetes work pool with Bascule's template (bascule/workpool.py): what README's
    `prefect work-pool create --type kubernetes --base-job-template` makes, through the API
    (three `prefect` commands' start-up time less)."""
    settings = JobSettings(image, server.pod_url, namespace, pull_policy="Never")
    template = workpool_template(settings)
    made = httpx.post(
        f"{server.host_url}/work_pools/",
        json={"name": POOL, "type": "kubernetes", "base_job_template": template},
        timeout=30,
    )
    if made.status_code == 409:  # a test before this one made it
        made = httpx.patch(
            f"{server.host_url}/work_pools/{POOL}",
            json={"base_job_template": template},
            timeout=30,
        )
    made.raise_for_status()


def kubernetes_worker(
    cluster: Cluster, api: str, log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``prefect worker start --type kubernetes`` on the host, with the admin kubeconfig (the
    worker's, not the flows': they get the pod's ServiceAccount), stopped by its group."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    return workers.process_worker(api, log, env=env, pool=POOL, options=("--type", "kubernetes"))
