"""Flows as Kubernetes Jobs in tests: the flow image, the session's Prefect server as pods
reach it (``prefect-<port>.bascule-system``, tests/cluster/host-service.sh), the Kubernetes work
pools and a real Bascule Kubernetes worker (bascule/kubeworker.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bascule.cli.workpool import template as workpool_template
from bascule.runpolicy import kubernetes_pool_name
from bascule.workpool import CONFIG_MOUNT, JobSettings
from tests.support import deploys, workers
from tests.support.cluster import CLUSTER_DIR, Cluster

SYSTEM_NAMESPACE = "bascule-system"
# The flow image is imported into the node, never pulled.
PULL_POLICY = "Never"


@dataclass(frozen=True)
class PodReachable:
    host_url: str  # the session's server, as tests and the worker reach it
    pod_url: str  # the same server, as pods reach it


def flow_image(cluster: Cluster, commit: str = "HEAD") -> str:
    """tests/cluster/flow-image.sh: the flow image at ``commit``, imported into the cluster
    (cached: seconds when it is there already). Committed code only: a working tree's
    uncommitted changes are not in it."""
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


@contextlib.contextmanager
def reachable_from_pods(cluster: Cluster, api_url: str) -> Iterator[PodReachable]:
    """The server at ``api_url`` (http://127.0.0.1:PORT/api) reachable from pods too, through
    tests/cluster/host-service.sh, whose relay is stopped by its pid afterwards."""
    if cluster.netns is None:
        pytest.skip("pods reach the host only in the local cluster (its network namespace)")
    port = urlsplit(api_url).port
    assert port is not None, api_url
    name = f"prefect-{port}"
    with tempfile.TemporaryDirectory(prefix="bascule-host-service-") as tmp:
        pidfile = Path(tmp) / "nsforward.pid"
        res = subprocess.run(
            [str(CLUSTER_DIR / "host-service.sh"), name, str(port), str(pidfile)],
            capture_output=True,
            text=True,
            env={**os.environ, "BASCULE_CLUSTER_NAME": cluster.netns},
            timeout=120,
        )
        try:
            assert res.returncode == 0, res.stderr
            yield PodReachable(api_url, res.stdout.strip() + "/api")
        finally:
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pidfile.read_text()), signal.SIGTERM)
            cluster.kubectl("-n", SYSTEM_NAMESPACE, "delete", "service", name, check=False)
            cluster.kubectl(
                "-n", SYSTEM_NAMESPACE, "delete", "endpointslice", f"{name}-node", check=False
            )


@pytest.fixture(scope="session")
def pod_prefect(cluster: Cluster, prefect_server: str) -> Iterator[PodReachable]:
    """The session's Prefect server, reachable from the host and from pods."""
    with reachable_from_pods(cluster, prefect_server) as server:
        yield server


def create_pool(server: PodReachable, image: str, namespace: str, environment: str) -> None:
    """An environment's Kubernetes work pool with Bascule's template (bascule/workpool.py):
    what README's `prefect work-pool create --type kubernetes --base-job-template` makes,
    through the API."""
    settings = JobSettings(image, server.pod_url, namespace, pull_policy=PULL_POLICY)
    workers.kubernetes_pool(
        server.host_url, kubernetes_pool_name(environment), workpool_template(settings)
    )


@contextlib.contextmanager
def kubernetes_worker(
    cluster: Cluster,
    server: PodReachable,
    log: Path,
    environment: str,
    image: str,
    namespaces: tuple[str, ...],
) -> Iterator[subprocess.Popen[bytes]]:
    """``bascule worker ENV --kubernetes`` on the host, with the admin kubeconfig (the
    worker's, not the flows': they get the pod's ServiceAccount), its Jobs reading the
    environments' files from the ConfigMap the template mounts; polling its pool (and
    reading its template) every 2 s, stopped by its group."""
    env = {
        **deploys.cli_env(server.host_url),
        "KUBECONFIG": str(cluster.kubeconfig),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
    }
    command = [
        sys.executable, "-m", "bascule.cli", "worker", environment, "--kubernetes",
        "--image", image, "--api-url", server.pod_url, "--pull-policy", PULL_POLICY,
        "--config-dir", CONFIG_MOUNT,
        *(f"--namespace={ns}" for ns in namespaces), "--name", f"{environment}-kubernetes-test",
    ]  # fmt: skip
    with workers.spawned(command, log, env, log.parent) as proc:
        yield proc
