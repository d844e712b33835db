"""Benchmark of many apps in one environment: ten `bascule deploy` processes at once (as ten
workers run them) against one alone, on the local cluster, with a Prefect server of its own
on the cluster's PostgreSQL. Prints one name=value per line.

    make bench            # or: python -m bench.apps

- apps_concurrent: how many apps deploy at once (one namespace, 1 replica each, checks and
  waits at their minimum, a load driver at 20 req/s on each app's active Service).
- apps_wall_seconds: from starting the ten processes until the last one exited.
- apps_one_deploy_seconds: one deploy of one app alone, process start to exit, same settings,
  with the same load on every app as during the ten.
- apps_wall_ratio: the two above divided (target ≤ 3 on a 2-core machine).
- apps_failed_requests / apps_requests_sent: over the ten drivers during the ten deploys.
- prefect_server_peak_rss_mb: the Prefect server's processes' resident memory at its peak
  while the ten ran, sampled from /proc every 0.2 s.
- prefect_server_cpu_seconds: the Prefect server's CPU time while the ten ran.
- apps_cpu_seconds, apps_one_deploy_cpu_seconds, cpu_cores: CPU time (user + system) of the
  ten deploy processes and of the one alone, and the machine's cores: ten deploys cannot take
  less wall time than apps_cpu_seconds ÷ cpu_cores (other work on the machine aside).
- apps_load_driver_cpu_seconds: this script's own CPU time during the ten (the load
  drivers' threads): machine time the ten deploys did not get.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path

from tests.support import deploys
from tests.support.apps import (
    Deploy,
    app_names,
    start_deploys,
    usage_of,
    wait_deploys,
    write_apps,
)
from tests.support.cluster import LoadDriver, start_local
from tests.support.prefect_server import running_prefect_server, server_database

IMAGES = [f"bascule.local/sample-app:{v}" for v in ("v1", "v2", "v3")]
RPS = 20
SELF, CHILDREN = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN


def cpu_of(who: int) -> float:
    """CPU seconds so far (user + system) of this process (SELF: its load drivers' threads,
    mostly) or of its children that ended and were waited for (CHILDREN)."""
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--apps", type=int, default=10)
    count = ap.parse_args().apps
    cluster = start_local()
    ns = f"bench-apps-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(ns)
    apps = app_names(count)
    with (
        tempfile.TemporaryDirectory() as tmp,
        server_database(cluster) as url,
        running_prefect_server(database_url=url) as server,
    ):
        api, work = server.api_url, Path(tmp)
        cfg = write_apps(work / "cfg", ns, cluster.kubeconfig, count)

        def failed(batch: list[Deploy]) -> list[str]:
            return [f"{d.app}: {d.output[-2000:]}" for d in batch if d.proc.returncode != 0]

        stage = wait_deploys(start_deploys(api, cfg, apps, IMAGES[0], work / "stage"))
        assert not failed(stage), failed(stage)
        # The load runs through the one deploy too: the one and the ten differ only in how
        # many deploy at once, not in what else the machine does.
        loads = [
            LoadDriver(cluster, deploys.service_url(cluster, ns, app), ("v1", "v2", "v3"), RPS, 4)
            for app in apps
        ]
        try:
            time.sleep(2)
            cpu = cpu_of(CHILDREN)
            one = wait_deploys(start_deploys(api, cfg, apps[:1], IMAGES[1], work / "one"))
            one_cpu = cpu_of(CHILDREN) - cpu
            assert not failed(one), failed(one)
            with usage_of(server.pid) as peak:
                started, cpu, own = time.monotonic(), cpu_of(CHILDREN), cpu_of(SELF)
                batch = wait_deploys(start_deploys(api, cfg, apps, IMAGES[2], work / "many"))
                wall, cpu = time.monotonic() - started, cpu_of(CHILDREN) - cpu
                own = cpu_of(SELF) - own
        finally:
            reports = [load.stop() for load in loads]
        assert not failed(batch), failed(batch)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    print(f"apps_concurrent={count}")
    print(f"apps_wall_seconds={wall:.1f}")
    print(f"apps_one_deploy_seconds={one[0].seconds:.1f}")
    print(f"apps_wall_ratio={wall / one[0].seconds:.2f}")
    print(f"apps_failed_requests={sum(len(r.failures) for r in reports)}")
    print(f"apps_requests_sent={sum(r.total for r in reports)}")
    print(f"prefect_server_peak_rss_mb={peak.peak_kb / 1024:.0f}")
    print(f"prefect_server_cpu_seconds={peak.cpu_seconds:.1f}")
    print(f"apps_cpu_seconds={cpu:.1f}")
    print(f"apps_one_deploy_cpu_seconds={one_cpu:.1f}")
    print(f"apps_load_driver_cpu_seconds={own:.1f}")
    print(f"cpu_cores={os.cpu_count()}")


if __name__ == "__main__":
    main()
