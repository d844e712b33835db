"""Flows as Kubernetes Jobs in tests: the flow image, the session's Prefect server as pods
reach it (``prefect-<port>.bascule-system``, tests/cluster/host-service.sh), the Kubernetes work
pool and a real ``prefect worker`` of type kubernetes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bascule.cli.workpool import template as workpool_template
from bascule.workpool import POOL, JobSettings
from tests.support import workers
from tests.support.cluster import CLUSTER_DIR, Cluster

SYSTEM_NAMESPACE = "bascule-system"


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


def create_pool(server: PodReachable, image: str, namespace: str) -> None:
    """The Kubernetes work pool with Bascule's template (bascule/workpool.py): what README's
    `prefect work-pool create --type kubernetes --base-job-template` makes, through the API."""
    settings = JobSettings(image, server.pod_url, namespace, pull_policy="Never")
    workers.kubernetes_pool(server.host_url, workpool_template(settings))


def kubernetes_worker(
    cluster: Cluster, api: str, log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``prefect worker start --type kubernetes`` on the host, with the admin kubeconfig (the
    worker's, not the flows': they get the pod's ServiceAccount), stopped by its group."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    return workers.process_worker(api, log, env=env, pool=POOL, options=("--type", "kubernetes"))
