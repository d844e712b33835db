"""The command of the Kubernetes work pools' Jobs (bascule/workpool.py): runs the flow run the
worker names (PREFECT__FLOW_RUN_ID) with Prefect's engine, the flow loaded from the entrypoint
the worker fixes (PREFECT__FLOW_ENTRYPOINT, bascule/kubeworker.py), in the image's code
directory; then exits with the code ``bascule deploy`` gives for the run's final state
(bascule/outcome.py), so a Job's pod says what the local command says: 0 deployed, 1 failed,
2 refused, 3 rolled back, ...

Not ``prefect flow-run execute``: that runs the deployment's pull steps in the pod and then
loads the deployment's entrypoint, whatever the environment says; both can be edited through
the API after the worker checked them. ``python -m prefect.engine`` with the entrypoint set
loads only that file of the image (prefect.flow_engine.load_flow).

The engine exits 1 for every failed run. A non-zero exit after a final state is harmless: the
worker then proposes Crashed, which the server refuses for an ended run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from uuid import UUID

from prefect.client.orchestration import get_client

from bascule.flows.launch import LAUNCH
from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import Exit, exit_code
from bascule.runpolicy import ENTRYPOINTS
from bascule.workpool import WORKDIR

RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"


def final_exit(flow_run_id: str) -> Exit | None:
    """The run's exit code, or None while it has not ended (paused, rescheduled)."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return None if state is None else exit_code(state.type.value, state.name)


def main() -> int:
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        print(
            f"bascule.flows.job: {RUN_ID_ENV} is not set: the worker starts this", file=sys.stderr
        )
        return int(Exit.USAGE)
    entrypoint = os.environ.get(ENTRYPOINT_ENV)
    if entrypoint not in ENTRYPOINTS.values():
        print(
            f"bascule.flows.job: {ENTRYPOINT_ENV} is {entrypoint!r}, not one of Bascule's flows: "
            "Bascule's Kubernetes worker sets it (bascule worker ENV --kubernetes)",
            file=sys.stderr,
        )
        return int(Exit.USAGE)
    execute = subprocess.Popen([sys.executable, *LAUNCH], cwd=WORKDIR)
    # The kubelet stops the pod with SIGTERM to PID 1 (this process): the engine must hear it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: execute.send_signal(number))
    returncode = execute.wait()
    try:
        code = final_exit(run_id)
    except Exception as exc:  # the API is gone: the engine's own code is all we know
        print(f"bascule.flows.job: the run's final state is unknown: {exc}", file=sys.stderr)
        return returncode
    return returncode if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
