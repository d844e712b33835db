"""The flow-run process of Bascule's workers: Prefect's engine, running a flow of the installed
Bascule in a checkout of the app's repository, which is configuration only.

    python -P -m bascule.flows.launch      (cwd: the checkout; bascule/worker.py, flows/job.py)

The checkout is whatever its commit holds, so nothing of it may be imported. ``-P`` keeps the
working directory off ``sys.path``; but Prefect's engine puts it first while it imports the
entrypoint (prefect.utilities.importtools.load_module), where a ``bascule/`` or ``yaml/`` of
the checkout would win over the installed one. So the flow's module, and everything it
imports, is imported here first, before the engine starts: the engine's import then finds it
in ``sys.modules``. Imports made later, while the flow runs, see ``sys.path`` without the
checkout.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys

from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import Exit
from bascule.runpolicy import ENTRYPOINTS

# How a worker starts this module: with the working directory off sys.path.
LAUNCH = ("-P", "-m", "bascule.flows.launch")


def main() -> int:
    entrypoint = os.environ.get(ENTRYPOINT_ENV)
    if entrypoint is None or entrypoint not in ENTRYPOINTS.values():
        print(
            f"bascule.flows.launch: {ENTRYPOINT_ENV} is {entrypoint!r}, not one of Bascule's "
            "flows: Bascule's workers set it (bascule worker ENV)",
            file=sys.stderr,
        )
        return int(Exit.USAGE)
    if not sys.flags.safe_path:  # python -P: the working directory is not on sys.path
        print("bascule.flows.launch: start it with python -P (see its docstring)", file=sys.stderr)
        return int(Exit.USAGE)
    importlib.import_module(entrypoint.split(":", 1)[0])
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
