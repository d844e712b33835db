"""The scheduled redeploy: the release an environment's history says is serving is checked
for drift (what really serves versus what was recorded), then deployed again through the
whole pipeline, so its checks prove it still works; both land in the history."""

from __future__ import annotations

from prefect import State, flow, get_run_logger
from prefect.states import Failed

from bascule import bluegreen
from bascule import history as h
from bascule.flows.deploy import (
    Outcome,
    exclusively,
    pipeline,
    run_name,
    with_evidence_key,
    with_secrets,
)
from bascule.outcome import StateName
from bascule.tasks import state
from bascule.tasks.context import DEFAULT_CONFIG_DIR, Env
from bascule.tasks.preflight import preflight


@flow(name="redeploy", flow_run_name=run_name("scheduled redeploy"))
def redeploy(
    environment: str, config_dir: str = str(DEFAULT_CONFIG_DIR), app: str | None = None
) -> State:
    env = Env.open(environment, config_dir, app)
    if refused := with_evidence_key(env) or with_secrets(env):
        return refused
    return exclusively(env, lambda: _redeploy(env))


def _redeploy(env: Env) -> Outcome:
    observed = preflight(env)
    releases, _ = state.read_history(env)
    serving = h.serving(releases, observed.active)
    if serving is None:
        reason = f"nothing recorded as serving {env.app} in {env.name}"
        return Outcome(Failed(message=reason, name=StateName.FAILED))
    replicas = None if env.workload.autoscaler else env.cfg.replicas
    found = bluegreen.drift(observed, serving, replicas)
    note = "drift: " + "; ".join(found) if found else f"no drift from {serving.id}"
    get_run_logger().info(note)
    return pipeline(env, serving.image, kind="redeploy", approval=False, note=note)
