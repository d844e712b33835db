"""Running `bascule` as people and CI do (a process of its own, so it can be killed; forked,
tests/support/cliforks.py) and reading what it left in the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bascule import kube as k
from bascule.manifests import LABEL_COLOR
from tests.support import cliforks
from tests.support.cluster import REPO, Cluster, wait_for


def cli_env(prefect_api: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PYTHONPATH": str(REPO),
        "PREFECT_LOGGING_LEVEL": "INFO",
        **(extra or {}),
    }


def run(
    prefect_api: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``env`` adds variables to the process's environment (the test's own is not changed)."""
    return cliforks.run(args, cwd=REPO, env=cli_env(prefect_api, env), timeout=timeout)


def start(
    prefect_api: str, *args: str, log: Path, env: dict[str, str] | None = None
) -> cliforks.Process:
    """A deploy in the background, in its own process group so a SIGKILL takes it whole."""
    with log.open("wb") as out:
        return cliforks.start(
            args,
            cwd=REPO,
            env=cli_env(prefect_api, env),
            stdout=out,
            stderr=subprocess.STDOUT,
            new_session=True,
        )


def kill(proc: cliforks.Process) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def history(cluster: Cluster, ns: str, app: str = "sample-app") -> list[dict[str, Any]]:
    stored = cluster.read(k.configmaps(ns, f"{app}-bascule-history"))
    return list(json.loads(stored["data"]["releases.json"])) if stored else []


def wait_phase(
    cluster: Cluster,
    ns: str,
    image: str,
    phases: set[str],
    timeout: float = 180,
    ignore: set[str] | None = None,
) -> dict[str, Any]:
    """The first release of ``image`` in one of ``phases``, passing over the releases whose
    ids are in ``ignore`` (those recorded before the run of interest)."""

    def reached() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in history(cluster, ns)
                if r["id"] not in (ignore or set()) and r["image"] == image and r["phase"] in phases
            ),
            None,
        )

    return wait_for(reached, timeout, interval=0.2, what=f"{image} in phase {phases}")


def paused_run(
    api: str,
    cluster: Cluster,
    ns: str,
    image: str,
    ignore: set[str] | None = None,
    timeout: float = 180,
) -> str:
    """The id of the run deploying ``image`` in ``ns``, once Prefect has it paused for
    approval. Found through the namespace's history, not the list of paused runs: tests on
    other workers pause runs of the same image on the same server."""
    # The history says awaiting-approval a moment before Prefect has the run paused: an
    # approval sent in between is refused (the run is not paused yet).
    asking = wait_phase(cluster, ns, image, {"awaiting-approval"}, timeout, ignore=ignore)
    return wait_paused(api, str(asking["flow_run_id"]))


def wait_paused(api: str, run_id: str) -> str:
    """``run_id``, once Prefect has the run paused (for approval)."""

    def paused() -> bool:
        return bool(httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"] == "PAUSED")

    wait_for(paused, 120, interval=0.3, what=f"run {run_id} paused for approval")
    return run_id


def active_color(cluster: Cluster, ns: str, app: str = "sample-app") -> str | None:
    svc = cluster.read(k.services(ns, app))
    return svc["spec"]["selector"].get(LABEL_COLOR) if svc else None


def replicas(cluster: Cluster, ns: str, color: str, app: str = "sample-app") -> int:
    return int(cluster.get(k.deployments(ns, f"{app}-{color}"))["spec"]["replicas"])


def service_url(cluster: Cluster, ns: str, app: str = "sample-app") -> str:
    ip = cluster.get(k.services(ns, app))["spec"]["clusterIP"]
    return f"http://{ip}/version"


def kill_at_switch(
    cluster: Cluster,
    ns: str,
    proc: subprocess.Popen[bytes],
    to: str,
    timeout: float = 180,
    app: str = "sample-app",
) -> None:
    """SIGKILLs ``proc`` the moment the active Service selects ``to``: after the switch's
    PATCH landed and before the run records it (it still waits for the endpoints to move,
    tens to hundreds of milliseconds, then writes the record)."""
    kube, path = cluster.client(), f"/api/v1/namespaces/{ns}/services"
    by_name = f"metadata.name={app}"

    def selects(svc: dict[str, Any]) -> bool:
        return (svc.get("spec", {}).get("selector") or {}).get("bascule.io/color") == to

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = kube.get(path, fieldSelector=by_name)
        if any(selects(s) for s in listing["items"]):
            kill(proc)
            return
        rv = listing["metadata"]["resourceVersion"]
        for _, svc in kube.watch(path, rv, 10, fieldSelector=by_name):
            if selects(svc):
                kill(proc)
                return
    raise TimeoutError(f"the active Service never selected {to}")


def run_flow(
    prefect_api: str, config_dir: str, call: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """A flow in a process of its own, as a worker runs it: ``call`` is ``module:function(…)``
    with ``{dir}`` where the config directory goes; exit 0 if the run completed."""
    module, expr = call.split(":", 1)
    name = expr.split("(", 1)[0]
    code = (
        f"import sys\nfrom {module} import {name}\n"
        f"s = {expr.replace('{dir}', 'sys.argv[1]')}\n"
        "print(f'{s.name}: {s.message}')\nsys.exit(0 if s.is_completed() else 1)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, config_dir],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(prefect_api),
        timeout=timeout,
    )


def run_redeploy(prefect_api: str, config_dir: str) -> subprocess.CompletedProcess[str]:
    """The scheduled staging redeploy flow, in a process of its own as a worker runs it."""
    return run_flow(
        prefect_api,
        config_dir,
        "bascule.flows.redeploy:redeploy('staging', {dir}, return_state=True)",
    )


def snapshot(cluster: Cluster, ns: str, app: str = "sample-app") -> dict[str, tuple[str, int]]:
    """(resourceVersion, generation) of the app's Deployments and Services."""
    selector = f"app.kubernetes.io/name={app}"
    return {
        f"{kind}/{i['metadata']['name']}": (
            i["metadata"]["resourceVersion"],
            i["metadata"].get("generation", 0),
        )
        for kind, path in (("Deployment", k.deployments(ns)), ("Service", k.services(ns)))
        for i in cluster.get(path, labelSelector=selector)["items"]
    }


def run_artifacts(api: str, run_id: str) -> list[dict[str, Any]]:
    """The artifacts a flow run left in Prefect (its reports, tables, progress)."""
    found: list[dict[str, Any]] = httpx.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    return found


def run_report(api: str, run_id: str) -> str:
    """The Markdown report the run left in Prefect."""
    return str(next(a["data"] for a in run_artifacts(api, run_id) if a["type"] == "markdown"))


def paused_again(api: str, run_id: str, times: int) -> None:
    """Waits for the run to pause for the ``times``-th time after a refused approval."""

    def paused() -> bool:
        state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]
        key = state["state_details"].get("pause_key")
        return bool(state["type"] == "PAUSED" and key == f"approval-{times}")

    wait_for(paused, 60, interval=0.3, what=f"pause number {times + 1}")


def start_run(
    api: str,
    deployment: str,
    parameters: dict[str, Any],
    job_variables: dict[str, Any] | None = None,
) -> str:
    """A flow run of ``deployment`` through the API, as any API credential can start one."""
    found = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30)
    found.raise_for_status()
    made = httpx.post(
        f"{api}/deployments/{found.json()['id']}/create_flow_run",
        json={"parameters": parameters, "job_variables": job_variables or {}},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    run_id: str = made.json()["id"]
    return run_id


def run_ended(api: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        state: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(final, timeout, what=f"flow run {run_id} to end")
