"""A real Pushgateway and Alertmanager for tests (Debian's prometheus-pushgateway and
prometheus-alertmanager): plain processes on loopback, on free ports, with their data in a
temporary directory, stopped by their pid.

``pushgateway`` and ``alertmanager`` are session-scoped fixtures yielding the base URL;
``running`` starts any of the Prometheus family's servers the same way (a test may start a
short-lived Prometheus with it).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import processes
from tests.support.prefect_server import free_port
from tests.support.shared import shared

START_TIMEOUT = 30.0
# Alertmanager routes everything to a receiver that sends nothing: tests read alerts back
# through its API. No cluster gossip: it would listen on every address.
ALERTMANAGER_CONFIG = "route:\n  receiver: keep\nreceivers:\n  - name: keep\n"


@contextlib.contextmanager
def running(
    binary: str, args: Callable[[Path, str], list[str]], ready: str = "/-/ready"
) -> Iterator[str]:
    """Starts ``binary`` with ``args(data_dir, listen_address)``, waits until ``ready``
    answers 200, yields its base URL and stops it on exit."""
    with tempfile.TemporaryDirectory(prefix=f"bascule-{Path(binary).name}-") as tmp:
        data, listen = Path(tmp), f"127.0.0.1:{free_port()}"
        url = f"http://{listen}"
        log = data / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, *args(data, listen)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{binary} did not start:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + ready, timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            yield url
        finally:
            processes.stop(proc, timeout=10, group=True)


def running_pushgateway() -> contextlib.AbstractContextManager[str]:
    # Debian's build persists to /var/lib/prometheus unless told otherwise.
    return running(
        "prometheus-pushgateway",
        lambda data, listen: [
            f"--web.listen-address={listen}",
            f"--persistence.file={data / 'pushgateway.data'}",
        ],
    )


def running_alertmanager() -> contextlib.AbstractContextManager[str]:
    def args(data: Path, listen: str) -> list[str]:
        (data / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG)
        return [
            f"--config.file={data / 'alertmanager.yml'}",
            f"--storage.path={data}",
            f"--web.listen-address={listen}",
            "--cluster.listen-address=",
        ]

    return running("prometheus-alertmanager", args)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shared("pushgateway", tmp_path_factory, running_pushgateway) as url:
        yield url


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shared("alertmanager", tmp_path_factory, running_alertmanager) as url:
        yield url


def group(pushgateway: str, **labels: str) -> dict[str, dict[str, list[dict[str, object]]]]:
    """The Pushgateway's metric families of the group with exactly ``labels`` (job included),
    read through its API: {family: {"metrics": [{"labels": ..., "value": ...}]}}."""
    for g in httpx.get(f"{pushgateway}/api/v1/metrics", timeout=5).json()["data"]:
        if g["labels"] == labels:
            return {
                name: family
                for name, family in g.items()
                if isinstance(family, dict) and "metrics" in family
            }
    return {}
