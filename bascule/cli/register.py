"""``bascule register [ENV ...]``: Bascule's Prefect deployments for an app's environments,
registered from the prefect.yaml the installed Bascule ships, with Prefect's own
``prefect deploy``. No checkout of Bascule is needed: an app team runs it from its repository.

    bascule register --dir deployments            # every environment of the directory
    bascule register qa --like staging            # qa's, made like staging's

Each environment gets the deployments of the shipped environment of its name, or of
``--like`` (default: dev's), named for it (bascule/registration.py). The process worker's
pools, bascule-<env>, are made first where missing (``prefect deploy`` refuses a missing
pool); a Kubernetes pool (``--kubernetes``) needs its job template, so it must exist already
(README: Flows as Kubernetes Jobs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bascule.config_files import environment_files
from bascule.errors import OperationFailed, UsageError
from bascule.registration import RegistrationError, models, pools, registration
from bascule.runpolicy import kubernetes_pool_name, pool_name

from .options import add_api_patience_argument, add_dir_argument, patiently

# How long `prefect deploy` may take for a few environments' deployments.
DEPLOY_TIMEOUT_S = 600


def shipped_spec() -> dict[str, Any]:
    """The prefect.yaml of the installed Bascule, parsed (its anchors expanded)."""
    text = resources.files("bascule").joinpath("prefect.yaml").read_text()
    spec: dict[str, Any] = yaml.safe_load(text)
    return spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "environments",
        nargs="*",
        metavar="ENV",
        help="the environments to register (default: every one of --dir)",
    )
    add_dir_argument(parser)
    parser.add_argument(
        "--like",
        metavar="ENV",
        help="the shipped environment whose deployments a new one gets "
        f"(default: its own if shipped, else dev; shipped: {', '.join(models(shipped_spec()))})",
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="also the deployments of the Kubernetes pools (bascule-<env>-kubernetes, made "
        "beforehand)",
    )
    add_api_patience_argument(parser)


def _make_pool(name: str) -> bool:
    """Makes the process worker's pool ``name`` as its worker would; False if it existed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from bascule.prefect_client import api_errors
    from bascule.worker import WORKER_TYPE, BasculeWorker

    pool = WorkPoolCreate(
        name=name,
        type=WORKER_TYPE,
        base_job_template=BasculeWorker.get_default_base_job_template(),
    )
    with api_errors(f"creating work pool {name}"), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(pool)
        except ObjectAlreadyExists:
            return False
    return True


def run(args: argparse.Namespace) -> int:
    names = args.environments or list(environment_files(args.dir))
    try:
        spec = registration(shipped_spec(), names, args.like, args.kubernetes)
    except RegistrationError as exc:
        raise UsageError(str(exc)) from None
    process_pools = {pool_name(env) for env in names}
    for pool in pools(spec):
        if pool in process_pools and patiently(partial(_make_pool, pool), args.api_patience):
            print(f"bascule: made work pool {pool} (its worker: bascule worker ...)")
    kubernetes = sorted({kubernetes_pool_name(env) for env in names} & set(pools(spec)))
    with tempfile.TemporaryDirectory(prefix="bascule-register-") as tmp:
        path = Path(tmp) / "prefect.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        # In an empty directory: nothing of the caller's is read or uploaded.
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
             "--prefect-file", str(path)],
            cwd=tmp, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()[-20:]
        hint = f" (the Kubernetes pools {', '.join(kubernetes)} must exist)" if kubernetes else ""
        raise OperationFailed("prefect deploy failed" + hint + ":\n" + "\n".join(why))
    for dep in spec["deployments"]:
        flow = dep["entrypoint"].rsplit(":", 1)[1]
        print(f"registered {flow}/{dep['name']} on {dep['work_pool']['name']}")
    return 0
