"""Recovery of a run that died in flight, started by Prefect rather than by a person.

A deploy killed between the switch and the end of its verification window leaves the new,
unproven version serving. The next run's preflight would put that right (traffic back to
the old color, the release recorded "interrupted"); this flow is that same reconcile on its
own, so that an automation can start it as soon as Prefect sees the death. prefect.yaml
gives each environment a ``recover/<env>`` deployment with two triggers:

- Crashed: a deploy, rollback or redeploy run of that environment, executed by a worker,
  whose process dies (SIGKILL, out of memory). The worker reports the run Crashed within
  a second; this is the path measured by the acceptance test. Cancelled too: on a cancel
  (Prefect's UI or API, ``bascule abort``) the worker kills the run's process wherever it
  was, and the reconcile records the release "aborted" (``tasks.abort``).
- Heartbeats stopped: the run's whole machine, worker included, is gone, so nobody reports
  a crash. Runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (set in
  the work pool's job variables; Prefect's floor is 30 s); when none arrives for 90 s and
  the run has not ended, recovery starts on another worker of the pool.

The recovery takes the deploy lock like any run: a dead holder's lock is taken over once
its Lease lapses (``tasks.lock``). Unlike a deploy, it also queues behind a holder that is
alive (for at least ``LOCK_WAIT_SECONDS``): its heartbeats were late, not stopped, and it
may yet die. One that still renews past that wait ends the recovery ``LockHeld`` having
changed nothing, and that run finishes by itself.

A run started in-process (``bascule deploy`` on a laptop or a CI runner) has no worker to
report its death; the command tags it and makes it beat like a deployment's run
(``bascule.cli.run.run_watched``), so only the heartbeat path sees it. With no worker of the
pool running, nothing executes the recovery: the release stays in flight until the next
deploy, rollback or recovery of that environment (``prefect deployment run
recover/<env>``) reconciles it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from prefect import State, flow, get_run_logger
from prefect.states import Completed

from bascule import history as h
from bascule.config_files import app_names
from bascule.flows.deploy import Outcome, exclusively, run_name
from bascule.tasks import state
from bascule.tasks.context import DEFAULT_CONFIG_DIR, Env
from bascule.tasks.preflight import preflight

LOCK_WAIT_SECONDS = 300


@flow(name="recover", flow_run_name=run_name("recover"))
def recover(
    environment: str,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
    cause: str = "started by hand",
    app: str | None = None,
) -> State:
    """Puts right a release a dead run left in flight; ``cause`` says what started it.
    ``app``: that app's; default: the environment file's own app and every other app of the
    environment with a release in flight (the automations do not know which app died)."""
    names = [app] if app is not None else app_names(config_dir, environment)
    states: dict[str, State] = {}
    for name in names:
        env = Env.open(environment, config_dir, name)
        # Nothing of this app to put right: its lock is not taken, so a deploy this recovery
        # meets (it may have been started for a run that ended after all) is not refused.
        if h.in_flight(state.read_history(env)[0]) is None:
            continue
        get_run_logger().info("recovering %s in %s: %s", env.app, env.name, cause)
        states[name] = exclusively(queued(env), partial(_recover, env))
    if not states:
        return Completed(message=f"nothing in flight in {environment}: nothing to recover")
    failed = [s for s in states.values() if not s.is_completed()]
    if failed or len(names) == 1:
        return failed[0] if failed else next(iter(states.values()))
    # Of several apps, each message names its app, even when one alone was in flight.
    return Completed(message="; ".join(f"{n}: {s.message}" for n, s in states.items()))


def queued(env: Env) -> Env:
    """``env`` waiting at least LOCK_WAIT_SECONDS for the deploy lock."""
    wait = max(env.cfg.rollout.lock_timeout_seconds, LOCK_WAIT_SECONDS)
    rollout = env.cfg.rollout.model_copy(update={"lock_timeout_seconds": wait})
    return replace(env, cfg=env.cfg.model_copy(update={"rollout": rollout}))


def _recover(env: Env) -> Outcome:
    stranded = h.in_flight(state.read_history(env)[0])
    observed = preflight(env)  # the reconcile every run starts with
    if stranded is None:
        return Outcome(Completed(message=f"nothing in flight in {env.name}: nothing to recover"))
    releases, _ = state.read_history(env)
    done = next(r for r in releases if r.id == stranded.id)
    return Outcome(
        Completed(
            message=f"{done.id} ({done.image}) {done.result}: {done.reason}; "
            f"{observed.active} serves"
        )
    )
