"""A real Prometheus (Debian's ``prometheus`` package) for tests and the demo.

It runs as a plain process inside the local cluster's network namespace, where the pod IPs
are, with its data in a temporary directory, and finds the app's pods from the API server
as ``kubernetes_sd_configs`` (role pod) does: Debian's build lacks that discovery, so
tests/support/podsd.py serves the same targets and ``__meta_kubernetes_pod_*`` labels to
``http_sd_configs``. The relabeling is a cluster's usual one: keep the pods annotated
``prometheus.io/scrape: "true"``, label their series with the pods' namespace, app, color
and release. The host reaches its HTTP API on a loopback port through the cluster's
``nsforward``. Stopped by their pids.

``prometheus`` is a session-scoped fixture (import it into tests/conftest.py);
``running_prometheus`` is the same as a context manager, for a test that stops its own.
``python -m tests.support.prometheus`` runs one until interrupted (the demo uses it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import processes
from tests.support.cluster import REPO, Cluster, existing, start_local
from tests.support.prefect_server import free_port
from tests.support.shared import shared

SCRAPE_SECONDS = 1
START_TIMEOUT = 60.0


def scrape_config(discovery_url: str) -> dict[str, Any]:
    """Pods annotated for scraping, labelled as a team's Prometheus labels them."""

    def label(source: str, target: str) -> dict[str, Any]:
        return {"source_labels": [source], "target_label": target}

    meta = "__meta_kubernetes_pod_"
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
        },
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "http_sd_configs": [{"url": discovery_url, "refresh_interval": "1s"}],
                "relabel_configs": [
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    # Pods that ended keep their IP in the API for a while; nothing to scrape.
                    {
                        "source_labels": [f"{meta}phase"],
                        "regex": "Pending|Running",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__address__", f"{meta}annotation_prometheus_io_port"],
                        "regex": r"([^:]+)(?::\d+)?;(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_path"],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                    label("__meta_kubernetes_namespace", "namespace"),
                    label(f"{meta}name", "pod"),
                    label(f"{meta}label_app_kubernetes_io_name", "app"),
                    label(f"{meta}label_bascule_io_color", "color"),
                    label(f"{meta}label_bascule_io_release", "release"),
                ],
            }
        ],
    }


@dataclass
class Prometheus:
    url: str  # from the host, e.g. http://127.0.0.1:41234
    procs: list[subprocess.Popen[bytes]]

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_scraped(self, namespace: str, color: str, timeout: float = 30) -> None:
        """Until every running pod of ``color`` in ``namespace`` has been scraped."""
        promql = f'up{{namespace="{namespace}",color="{color}"}} == 1'
        deadline = time.monotonic() + timeout
        while not self.query(promql):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus scraped no {color} pod in {namespace}")
            time.sleep(0.5)

    def __getstate__(self) -> dict[str, Any]:
        # Another xdist worker gets the address only: its starter stops it (tests/support/shared).
        return {"url": self.url, "procs": []}

    def stop(self) -> None:
        for proc in self.procs:
            processes.stop(proc, timeout=15)


def _inside_kubeconfig(cluster: Cluster, directory: Path) -> Path:
    """The cluster's kubeconfig with the API server's address as seen from inside the
    network namespace (the host's loopback port is not there)."""
    data = yaml.safe_load(cluster.kubeconfig.read_text())
    if cluster.netns is not None:
        for c in data["clusters"]:
            c["cluster"]["server"] = "https://127.0.0.1:6443"
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def running_prometheus(cluster: Cluster) -> Iterator[Prometheus]:
    with tempfile.TemporaryDirectory(prefix="bascule-prometheus-") as tmp:
        directory = Path(tmp)
        config = directory / "prometheus.yml"
        port, sd_port = free_port(), free_port()
        config.write_text(yaml.safe_dump(scrape_config(f"http://127.0.0.1:{sd_port}/")))
        discovery = [
            sys.executable,
            "-m",
            "tests.support.podsd",
            "--kubeconfig",
            str(_inside_kubeconfig(cluster, directory)),
            "--listen",
            f"127.0.0.1:{sd_port}",
        ]
        argv = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        log = (directory / "prometheus.log").open("wb")
        procs: list[subprocess.Popen[bytes]] = []
        inside = cluster.in_netns if cluster.netns is not None else list
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # nsenter execs its command in the namespace: each pid is the process's own.
        for cmd in (discovery, argv):
            procs.append(
                subprocess.Popen(
                    inside(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
                )
            )
        if cluster.netns is not None:
            ready = directory / "forward.ready"
            forward = Path(cluster.kubectl_bin).parent / "nsforward"
            procs.append(
                subprocess.Popen(
                    [
                        str(forward),
                        "-netns",
                        f"/run/netns/{cluster.netns}",
                        "-ready-file",
                        str(ready),
                        "-map",
                        f"127.0.0.1:{port}=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        prom = Prometheus(f"http://127.0.0.1:{port}", procs)
        try:
            _wait_ready(prom, directory / "prometheus.log")
            yield prom
        finally:
            prom.stop()
            log.close()


def _wait_ready(prom: Prometheus, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in prom.procs):
            raise RuntimeError(f"Prometheus exited:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"Prometheus not ready in {START_TIMEOUT} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with shared("prometheus", tmp_path_factory, lambda: running_prometheus(cluster)) as prom:
        yield prom


if __name__ == "__main__":
    # The demo's Prometheus: prints its URL, runs until SIGINT/SIGTERM.
    with running_prometheus(existing() or start_local()) as prom:
        print(f"PROMETHEUS_URL={prom.url}", flush=True)
        stop = signal.sigwait  # the process waits here until told to stop
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        stop({signal.SIGINT, signal.SIGTERM})
        print("stopping Prometheus", file=sys.stderr)
