"""A run asked to stop: ``bascule abort RUN`` and Cancel in Prefect's UI or API both set the
flow run Cancelling, the first with who asked in the state's message.

Who acts on it depends on what runs the flow:
- a run in a process of its own (``bascule deploy`` here, a CI runner): nothing kills it, so
  the run looks at its own state at safe points (``Watch.check``: between steps, in the
  approval wait, each round of the verification window) and puts right what it started;
- a run a worker executes: the worker kills its process at once (SIGTERM, SIGKILL after a
  grace), the run ends Cancelled, and that starts ``recover/<env>`` (prefect.yaml's
  triggers), whose reconcile (``tasks.preflight.reconcile``) is the one a crashed run gets,
  recorded as aborted (``request``).
Either way: before the switch the idle color goes to zero and traffic never moves; after it,
traffic goes back to the old color.

Not an ``on_cancellation`` hook: Prefect runs it in the run's process only if that process
outlives the SIGTERM long enough, never after a SIGKILL, and Bascule's worker never loads a
run's code to run hooks itself (bascule/worker.py). The reconcile reads the cluster, so it
holds whatever the process got to do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType

from bascule.errors import OperationFailed

POLL_S = 1.0  # how often a run asks Prefect whether it was asked to stop, at most
# A cancel that names no one: the UI's and `prefect flow-run cancel`'s.
UNNAMED = "cancelled in Prefect"
_STOPPING = (StateType.CANCELLING, StateType.CANCELLED)


class Aborted(OperationFailed):
    """The run was asked to stop; the message says by whom. Raised only where a run checks
    (``Watch.check``), so no step is cut in the middle of a write."""


def asked(states: list[State]) -> str | None:
    """Who asked the run with these states (oldest first) to stop, or None if nobody did:
    the message of its Cancelling state (a Cancelled one says only that it ended)."""
    if not states or states[-1].type not in _STOPPING:
        return None
    cancelling = [s for s in states if s.type == StateType.CANCELLING]
    return (cancelling[-1].message if cancelling else None) or UNNAMED


def request(flow_run_id: str | None) -> str | None:
    """Who asked ``flow_run_id`` to stop, from Prefect; None if nobody did, or if Prefect
    does not answer (a reconcile then records the run interrupted: it still puts it right)."""
    if flow_run_id is None:
        return None
    try:
        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(UUID(flow_run_id))
    except Exception:
        return None
    return asked(sorted(states, key=lambda s: s.timestamp))


@dataclass
class Watch:
    """A run's look at its own Prefect state, at most every ``poll_s``; ``run_id`` None (no
    flow run, or a run past the point where stopping changes anything) never stops."""

    run_id: str | None
    poll_s: float = POLL_S
    _due: float = 0.0

    def check(self) -> None:
        """Raises Aborted if the run was asked to stop."""
        if self.run_id is None or time.monotonic() < self._due:
            return
        self._due = time.monotonic() + self.poll_s
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(self.run_id)).state
        except Exception:
            return  # a Prefect API that does not answer must not stop a deploy
        stopped(state)


def stopped(state: State | None) -> None:
    """Raises Aborted if ``state`` (a run's current one) says it was asked to stop."""
    if state is not None and state.type in _STOPPING:
        raise Aborted(state.message or UNNAMED)
