"""``bascule worker ENVIRONMENT``: serves the environment's work pool with Bascule's own worker
(bascule/worker.py), or with ``--kubernetes`` its Kubernetes pool with Bascule's Kubernetes
worker (bascule/kubeworker.py), under this machine's policy."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from bascule import config as c
from bascule.evidence import KEY_VARIABLE
from bascule.jobpolicy import JobPolicy
from bascule.runpolicy import Policy, config_path
from bascule.worker import BasculeWorker
from bascule.workpool import CONFIG_MAP, CONFIG_MOUNT, PULL_POLICIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("environment", help="the one environment this worker runs")
    parser.add_argument(
        "--repository",
        help="the app's git repository (URL or path): each run clones it at its commit and "
        "reads its configuration; the code run is this installed Bascule (required, but "
        "with --kubernetes)",
    )
    parser.add_argument(
        "--config-dir",
        default=Policy.config_dir,
        help="the environments' directory inside the repository (default: %(default)s); "
        f"with --kubernetes, inside the image, or {CONFIG_MOUNT} (the ConfigMap "
        f"{CONFIG_MAP} of the Job's namespace)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="a namespace its credentials reach (repeat); runs targeting others are refused",
    )
    parser.add_argument(
        "--protected",
        action="store_true",
        help="only merged commits descending from the serving release's (production, and a "
        f"worker holding ${KEY_VARIABLE}, always)",
    )
    parser.add_argument("--name", help="the worker's name in the Prefect UI")
    kube = parser.add_argument_group(
        "as Kubernetes Jobs", "runs as Jobs from a flow image (README: Flows as Kubernetes Jobs)"
    )
    kube.add_argument(
        "--kubernetes",
        action="store_true",
        help="run the pool bascule-<environment>-kubernetes's runs as Jobs (needs --namespace)",
    )
    kube.add_argument("--image", help="the flow image, Bascule at one commit: the only one run")
    kube.add_argument(
        "--api-url",
        help="PREFECT_API_URL as the Jobs' pods reach the server (default: this worker's)",
    )
    kube.add_argument("--pull-policy", default="IfNotPresent", choices=PULL_POLICIES)
    parser.epilog = (
        "Give it only this environment's credentials: its $KUBECONFIG (bascule kubeconfig) and "
        "its secret sources. It polls the work pool bascule-<environment> (made if missing), "
        "or with --kubernetes bascule-<environment>-kubernetes."
    )


def run(args: argparse.Namespace) -> int:
    try:
        c.check_environment_name(args.environment)
        # A Job may read the environments' files from the ConfigMap its pool's template mounts.
        if not (args.kubernetes and args.config_dir == CONFIG_MOUNT):
            config_path(args.config_dir)
        if args.kubernetes and not (args.image and args.namespace):
            raise ValueError("--kubernetes needs --image and at least one --namespace")
        if not args.kubernetes and not args.repository:
            raise ValueError("--repository is required (or --kubernetes)")
        policy = Policy(
            environment=args.environment,
            repository=args.repository or args.image,
            config_dir=args.config_dir,
            # A worker that signs promotion evidence runs only reviewed code: a branch's flows
            # would run beside its key.
            protected=args.protected or bool(os.environ.get(KEY_VARIABLE)),
            namespaces=frozenset(args.namespace),
        )
        job_policy = _job_policy(args, policy) if args.kubernetes else None
    except ValueError as exc:
        print(f"bascule worker: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        if job_policy is not None:
            from bascule.kubeworker import BasculeKubernetesWorker

            kube = BasculeKubernetesWorker(job_policy, args.pull_policy, name=args.name)
            async with kube:
                await kube.start()
            return
        async with BasculeWorker(policy, name=args.name) as worker:
            await worker.start()

    asyncio.run(serve())
    return 0


def _job_policy(args: argparse.Namespace, policy: Policy) -> JobPolicy:
    """The Kubernetes worker's settings; ValueError for a bad --api-url."""
    from prefect.settings import PREFECT_API_URL

    api_url = args.api_url or PREFECT_API_URL.value() or ""
    job_policy = JobPolicy(policy, args.image, api_url)
    job_policy.env()  # JobSettings checks the URL
    return job_policy
