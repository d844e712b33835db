"""``python -m bascule.cli.workpool``: prints the Kubernetes work pool's base job template
(bascule/workpool.py) for ``prefect work-pool create --type kubernetes --base-job-template``.

    python -m bascule.cli.workpool --image REF --api-url URL [--namespace NS]
        [--pull-policy Never] > template.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bascule.workpool import PULL_POLICIES, JobSettings, job_template


def template(settings: JobSettings) -> dict[str, Any]:
    """prefect-kubernetes' default template (the installed release's) with Bascule's defaults."""
    from prefect_kubernetes.worker import KubernetesWorker

    return job_template(KubernetesWorker.get_default_base_job_template(), settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bascule.cli.workpool", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--image", required=True, help="the flow image, Bascule at a commit")
    parser.add_argument(
        "--api-url", required=True, help="PREFECT_API_URL as the Jobs' pods reach the server"
    )
    parser.add_argument("--namespace", default="default", help="where Jobs run by default")
    parser.add_argument("--pull-policy", default="IfNotPresent", choices=PULL_POLICIES)
    args = parser.parse_args(argv)
    try:
        settings = JobSettings(
            args.image, args.api_url, args.namespace, pull_policy=args.pull_policy
        )
    except ValueError as exc:
        parser.error(str(exc))  # exits 2
    json.dump(template(settings), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
