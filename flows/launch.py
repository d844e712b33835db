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

    python -P -m bascule.flows.launch --fork-server DIR      (bascule/worker.py, once)

The same, as a fork server (bascule/forkserver.py): every flow's module imported once, each
run forked from it into its checkout, where it goes on as the line above would.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
from pathlib import Path

from bascule import forkserver
from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import Exit
from bascule.runpolicy import ENTRYPOINTS

# How a worker starts this module: with the working directory off sys.path.
LAUNCH = ("-P", "-m", "bascule.flows.launch")
# What `python -m prefect.engine` imports before and while it loads the flow run.
ENGINE_MODULES = ("prefect.engine", "prefect.flow_engine", "prefect._internal.metrics")


def main(argv: list[str]) -> int:
    if argv[:1] == [forkserver.FORK_SERVER_FLAG] and len(argv) == 2:
        return serve_forks(Path(argv[1]))
    return launch()


def launch() -> int:
    """Prefect's engine for the flow at $PREFECT__FLOW_ENTRYPOINT, one of Bascule's, its
    module imported before the engine puts the working directory on sys.path."""
    entrypoint = os.environ.get(ENTRYPOINT_ENV)
    if entrypoint is None or entrypoint not in ENTRYPOINTS.values():
        print(
            f"bascule.flows.launch: {ENTRYPOINT_ENV} is {entrypoint!r}, not one of Bascule's "
            "flows: Bascule's workers set it (bascule worker ENV)",
            file=sys.stderr,
        )
        return int(Exit.USAGE)
    if not _safe_path():
        return int(Exit.USAGE)
    importlib.import_module(entrypoint.split(":", 1)[0])
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    return 0


def _safe_path() -> bool:
    """Started with python -P: the working directory is not on sys.path."""
    if not sys.flags.safe_path:
        print("bascule.flows.launch: start it with python -P (see its docstring)", file=sys.stderr)
    return sys.flags.safe_path


def serve_forks(directory: Path) -> int:
    """The worker's fork server (bascule/forkserver.py): every flow's module and the engine's
    imported once; each run, forked, reads Prefect's settings from its own environment and
    goes on as ``launch``."""
    if not _safe_path():
        return int(Exit.USAGE)
    for module in (*(e.split(":", 1)[0] for e in ENTRYPOINTS.values()), *ENGINE_MODULES):
        importlib.import_module(module)
    from prefect.context import refresh_global_settings_context

    if forkserver.serve(directory) is None:
        return 0
    # Prefect read its settings when it was imported, from the server's environment.
    refresh_global_settings_context()
    return launch()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
