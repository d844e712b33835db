"""The README's quickstart, "Bascule for your app", followed as written, on the local cluster,
for an app that is not the sample app.

Its files and commands are read from README.md (tests/support/quickstart.py) and run as they
are, in a Git repository of the app's own that holds only those files; only the README's
example values are replaced, each named in ``placeholders`` below. The app has images of its
own (tests/quickstart/server.py). Bascule is installed as a package, from a wheel of this
checkout, into a directory of its own: the README's install commands, which fetch a release,
are the one step done otherwise (``install``). Then, as the README says: the environment's
account in the cluster, its deployments in Prefect, its worker, a first and a second deploy
through the worker, and a rollback through it. The worker and its flow runs must run the
installed Bascule: the stacks of their processes are read with py-spy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import deploys, quickstart
from tests.support.cluster import REPO, Cluster, wait_for
from tests.support.workers import git, spawned

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]

ENVIRONMENT = "sandbox"  # the quickstart's: no other test registers deploy/sandbox
APP = "web"
IMAGE = "registry.example/acme/web"  # the README's example image repository
REUSABLE = REPO / ".github" / "workflows" / "_deploy.yml"
COMMAND_TIMEOUT_S = 600


def version() -> str:
    """The release the quickstart pins: this checkout's package version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return f"v{project['version']}"


def test_the_quickstart_pins_this_release_and_calls_the_reusable_workflow_as_it_is() -> None:
    qs = quickstart.read()
    assert set(re.findall(r"\bv\d+\.\d+\.\d+\b", qs.text)) == {version()}
    workflow = yaml.safe_load(qs.files[".github/workflows/deploy.yml"])
    reusable = yaml.safe_load(REUSABLE.read_text())
    # YAML 1.1 reads the key `on` as true.
    accepted = reusable[True]["workflow_call"]["inputs"]
    (job,) = workflow["jobs"].values()
    assert job["uses"] == f"<owner>/bascule/.github/workflows/_deploy.yml@{version()}"
    assert job["with"]["bascule-version"] == version()
    assert job["with"]["environment"] == ENVIRONMENT
    unknown = set(job["with"]) - set(accepted)
    assert not unknown, f"the quickstart passes inputs _deploy.yml does not take: {unknown}"
    required = {name for name, spec in accepted.items() if spec.get("required")}
    assert required <= set(job["with"]), required - set(job["with"])


def test_the_quickstart_workflow_passes_actionlint(tmp_path: Path) -> None:
    """Checked as the repository's own workflows are (tests/workflows)."""
    built = subprocess.run(
        [str(REPO / "scripts" / "install-actionlint.sh")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert built.returncode == 0, f"building actionlint failed:\n{built.stderr}"
    workflow = tmp_path / ".github" / "workflows" / "deploy.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(quickstart.read().files[".github/workflows/deploy.yml"])
    linted = subprocess.run(
        [built.stdout.split()[-1], "-color=false", str(workflow)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr


def install(tmp: Path) -> Path:
    """Bascule as a package: a wheel of this checkout (built from a copy of its files, so no
    build output lands in it) installed with ``pip --target`` into a directory of its own,
    which is returned. Its dependencies are this interpreter's (the lock's versions), standing
    for the README's ``pip install --require-hashes -r requirements.lock``."""
    source = tmp / "bascule-src"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        path = REPO / name
        if not path.exists() and not path.is_symlink():
            continue  # deleted in the work tree
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        else:
            shutil.copy2(path, target)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    wheels, site = tmp / "wheels", tmp / "site"
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = wheels.glob("bascule-*.whl")
    done = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return site


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A quickstart command as a person types it."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args[-1]}: exit {done.returncode}\n" + (
        done.stdout[-4000:] + done.stderr[-4000:]
    )
    return done.stdout


def serving(cluster: Cluster, namespace: str) -> str:
    status, body = cluster.http_get(deploys.service_url(cluster, namespace, APP))
    assert status == 200, body
    return str(json.loads(body)["version"])


def python_files(pid: int) -> list[str]:
    """The files of the Python frames of ``pid`` (every thread), as py-spy reads them from
    the process's memory; none while it cannot (not Python, or not started yet)."""
    spy = Path(sys.executable).parent / "py-spy"
    done = subprocess.run(
        [str(spy), "dump", "--json", "--full-filenames", "--pid", str(pid)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return []
    return sorted({f["filename"] for thread in json.loads(done.stdout) for f in thread["frames"]})


def runs_installed(pids: list[int], running: str, site: Path) -> list[str] | None:
    """Once one of ``pids`` runs a module whose file ends in ``running`` (wherever it comes
    from), the files of Bascule's it runs, each asserted to be under ``site``; else None."""
    for pid in pids:
        files = python_files(pid)
        if any(f.endswith(running) for f in files):
            bascule = [f for f in files if "/bascule/" in f or f.endswith(running)]
            assert all(f.startswith(f"{site}/bascule/") for f in bascule), bascule
            return bascule
    return None


def flow_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}}
    return list(httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json())


def deployment_id(api: str, name: str) -> str:
    return str(httpx.get(f"{api}/deployments/name/{name}", timeout=30).json()["id"])


def test_the_quickstart_deploys_an_app_of_its_own_with_the_installed_bascule(
    cluster: Cluster, namespace: str, prefect_server: str, tmp_path: Path
) -> None:
    if cluster.netns is None:
        pytest.skip("the app's images are imported into the local cluster's containerd")
    started = time.monotonic()
    images = quickstart.images(cluster)
    qs = quickstart.read()

    # The README's example values, and what stands for them here; each must be in it.
    app_dir, kubeconfig = tmp_path / "web", tmp_path / "worker" / "kubeconfig"
    bare = tmp_path / "web.git"
    placeholders = {
        "web-sandbox": namespace,
        IMAGE: quickstart.IMAGE_REPOSITORY,
        "https://github.com/acme/web.git": str(bare),
        "/etc/bascule/sandbox/kubeconfig": str(kubeconfig),
    }
    for example in placeholders:
        assert example in qs.text, f"the quickstart no longer says {example!r}"

    # 1. The app's own repository: the quickstart's files and nothing else.
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", "main", str(app_dir))
    for name, content in qs.files.items():
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / name).write_text(quickstart.substitute(content, placeholders))
    git(app_dir, "add", "-A")
    git(app_dir, "commit", "-q", "-m", "Deploy web with Bascule")
    git(app_dir, "push", "-q", str(bare), "HEAD:refs/heads/main")
    assert sorted(git(app_dir, "ls-files").splitlines()) == sorted(qs.files)

    # 2. Bascule installed as a package; `bascule` is its script, its imports its own.
    site = install(tmp_path)
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            [
                str(site / "bin"),
                str(Path(sys.executable).parent),
                str(Path(cluster.kubectl_bin).parent),
                os.environ["PATH"],
            ]
        ),
        "PYTHONPATH": str(site),  # not this checkout
        "KUBECONFIG": str(cluster.kubeconfig),  # the cluster admin's, for step 3
        "PREFECT_API_URL": prefect_server,
        # The worker asks its pool for runs every 2 s (Prefect's default: 10).
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    where = ok(
        shell(
            "command -v bascule; python -c 'import bascule.flows.deploy, bascule.worker, "
            "bascule; print(bascule.__file__)'",
            app_dir,
            env,
        )
    ).split()
    assert where == [str(site / "bin" / "bascule"), str(site / "bascule" / "__init__.py")]

    # 3. The environment's account, and its worker's kubeconfig.
    ok(shell(qs.command("bascule rbac"), app_dir, env))
    ok(shell(quickstart.substitute(qs.command("bascule kubeconfig"), placeholders), app_dir, env))
    assert kubeconfig.stat().st_mode & 0o077 == 0

    # 4. Prefect: the environment's deployments, and its worker.
    registered = ok(shell(qs.command("bascule register"), app_dir, env))
    for flow in ("deploy", "rollback", "recover"):
        assert f"registered {flow}/{ENVIRONMENT} on bascule-{ENVIRONMENT}" in registered
    worker_command = quickstart.substitute(qs.command("bascule worker"), placeholders)
    log = tmp_path / "worker.log"
    with spawned(["bash", "-c", worker_command], log, env, tmp_path) as worker:
        # 5. Two deploys through the worker, then a rollback through it.
        trigger = quickstart.substitute(qs.command("bascule trigger", "--image"), placeholders)
        assert f"{quickstart.IMAGE_REPOSITORY}:v1" in trigger
        first = first_deploy(prefect_server, trigger, app_dir, env, site, worker.pid)
        assert f"{images['v1']}" in first, first
        assert serving(cluster, namespace) == "v1"

        ok(shell(trigger.replace(":v1", ":v2"), app_dir, env))
        assert serving(cluster, namespace) == "v2"

        ok(shell(qs.command("bascule trigger", "--rollback"), app_dir, env))
        assert serving(cluster, namespace) == "v1"
    print(f"quickstart: {time.monotonic() - started:.0f} s")

    releases = deploys.history(cluster, namespace, APP)
    by_kind = {kind: [r for r in releases if r["kind"] == kind] for kind in ("deploy", "rollback")}
    assert [r["image"] for r in by_kind["deploy"]] == [images["v1"], images["v2"]], releases
    assert len(by_kind["rollback"]) == 1 and by_kind["rollback"][0]["image"] == images["v1"]
    commit = git(app_dir, "rev-parse", "HEAD")
    for record in releases:
        assert record["result"] == "succeeded", record
        run = httpx.get(f"{prefect_server}/flow_runs/{record['flow_run_id']}", timeout=30).json()
        # Each ran on the environment's pool: its worker ran it.
        assert run["work_pool_name"] == f"bascule-{ENVIRONMENT}", run
    assert {r["commit"] for r in by_kind["deploy"]} == {commit}
    assert "Refused" not in log.read_text()


def first_deploy(
    api: str, trigger: str, cwd: Path, env: dict[str, str], site: Path, worker_pid: int
) -> str:
    """The first deploy, as the quickstart starts it; while it runs, the worker's and the
    flow run's processes are seen running the installed Bascule. Returns its output."""
    worker_runs_installed(worker_pid, site)
    deployment = deployment_id(api, f"deploy/{ENVIRONMENT}")
    proc = subprocess.Popen(
        ["bash", "-c", trigger], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def flow_run_process() -> list[str] | None:
            # As the worker told Prefect: a forked run's /proc environ is its fork server's.
            runs = flow_runs(api, deployment)
            pids = [int(r["infrastructure_pid"]) for r in runs if r.get("infrastructure_pid")]
            return runs_installed(pids, "flows/deploy.py", site)

        files = wait_for(flow_run_process, 180, interval=0.5, what="the flow run's process")
        print(f"quickstart: the flow run's process runs {len(files)} files of {site}")
        out, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    return out


def worker_runs_installed(pid: int, site: Path) -> None:
    """The worker (``pid``, or the process bash started it as) runs the installed Bascule."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *map(int, children.read_text().split())] if children.exists() else [pid]
    files = wait_for(
        lambda: runs_installed(pids, "bascule/cli/worker.py", site),
        60,
        interval=0.5,
        what="the worker's Python frames",
    )
    print(f"quickstart: the worker runs {len(files)} files of {site}")
