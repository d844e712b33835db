"""The recover automations of prefect.yaml, judged by Prefect's own trigger matching: which
dead runs start `recover/<env>`, and which never do (no loop, no other environment)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from prefect.cli.deploy._triggers import DeploymentTriggerAdapter
from prefect.context import TagsContext
from prefect.server.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.server.events.schemas.events import ReceivedEvent

from bascule import runpolicy, workpool
from bascule.cli.run import HEARTBEAT_SECONDS, run_watched
from bascule.config_files import environment_files
from bascule.flows.deploy import deploy
from bascule.flows.recover import recover
from bascule.flows.redeploy import redeploy
from bascule.flows.rollback import rollback
from bascule.worker import run_environment
from tests.support.envs import REPO

# The shipped example's environments, each with its recover deployment in prefect.yaml.
ENVIRONMENTS = tuple(environment_files(REPO / "deployments"))
WATCHED = (deploy.name, rollback.name, redeploy.name)  # a rename must not go unwatched


def deployments() -> list[dict[str, Any]]:
    return list(yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"])


def recover_triggers(env: str) -> list[EventTrigger]:
    dep = next(
        d
        for d in deployments()
        if d["entrypoint"] == "bascule.flows.recover:recover" and d["name"] == env
    )
    assert dep["parameters"] == {"environment": env}
    out = []
    for raw in dep["triggers"]:
        trigger = DeploymentTriggerAdapter.validate_python(raw)
        trigger.set_deployment_id(uuid.uuid4())
        # The server's validation too: it refuses automations that could start themselves.
        automation = AutomationCore.model_validate(trigger.as_automation().model_dump())
        assert isinstance(automation.trigger, EventTrigger)
        out.append(automation.trigger)
    return out


def run_event(name: str, flow: str, tags: list[str]) -> ReceivedEvent:
    run = uuid.uuid4()
    related: list[dict[str, Any]] = [
        {
            "prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": flow,
        },
        *(
            {"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"}
            for t in tags
        ),
    ]
    return ReceivedEvent(
        event=name,
        resource={"prefect.resource.id": f"prefect.flow-run.{run}"},
        related=related,
        id=uuid.uuid4(),
        occurred=datetime.now(UTC),
    )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_a_dead_run_of_the_environment_starts_its_recovery(env: str) -> None:
    crashed, silent = recover_triggers(env)
    for flow in WATCHED:
        assert crashed.covers(run_event("prefect.flow-run.Crashed", flow, ["bascule", env]))
        # A cancelled run was killed by its worker wherever it was (tasks/abort.py).
        assert crashed.covers(run_event("prefect.flow-run.Cancelled", flow, ["bascule", env]))
        beat = run_event("prefect.flow-run.heartbeat", flow, ["bascule", env])
        assert silent.starts_after(beat.event) and silent.covers(beat)
    assert silent.posture == Posture.Proactive and silent.for_each == {"prefect.resource.id"}
    # A run that ended, however, is expected: its silence afterwards is no death.
    assert all(silent.expects(f"prefect.flow-run.{s}") for s in ("Completed", "Failed", "Crashed"))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_recovery_for_itself_other_environments_or_untagged_runs(env: str) -> None:
    other = next(e for e in ENVIRONMENTS if e != env)
    for trigger in recover_triggers(env):
        for flow, tags in (
            (recover.name, ["bascule", env, "recover"]),  # a crashed recovery: no loop
            ("deploy", ["bascule", other]),
            ("deploy", []),  # a run nobody tagged
        ):
            assert not trigger.covers(run_event("prefect.flow-run.Crashed", flow, tags))
            assert not trigger.covers(run_event("prefect.flow-run.Cancelled", flow, tags))
            assert not trigger.covers(run_event("prefect.flow-run.heartbeat", flow, tags))


def heartbeat_env(dep: dict[str, Any]) -> dict[str, str]:
    """The environment a deployment's runs get: on the Kubernetes pool the pool's own
    (bascule/workpool.py), which a deployment's ``env`` would replace; on an environment's
    own pool, what its worker gives every run (bascule/worker.py)."""
    pool = dep["work_pool"]
    if pool["name"] == runpolicy.kubernetes_pool_name(dep["parameters"]["environment"]):
        assert "env" not in pool.get("job_variables", {}), dep["name"]
        return workpool.default_env(workpool.JobSettings("image", "http://prefect/api"))
    return run_environment({}, dep["entrypoint"])


def test_watched_runs_beat_often_enough_for_the_window() -> None:
    """Three beats fit in the window, so one late beat is no death."""
    window = min(silent.within.total_seconds() for _, silent in map(recover_triggers, ENVIRONMENTS))
    for dep in deployments():
        if dep["entrypoint"] != "bascule.flows.recover:recover":
            env = heartbeat_env(dep)
            assert 3 * int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) <= window, dep["name"]
            # ``bascule deploy`` beats as often: its runs are watched the same way.
            assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) == HEARTBEAT_SECONDS


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_runs_started_in_process_are_watched_too(env: str) -> None:
    """``bascule deploy`` / ``rollback`` run the flow here, tagged as a deployment's run."""
    seen: dict[str, Any] = {}

    def flow(**parameters: Any) -> Any:
        seen.update(parameters, tags=sorted(TagsContext.get().current_tags))
        return "state"

    assert run_watched(env, "sample-api", flow, image="app:v2") == "state"
    assert seen["environment"] == env and seen["image"] == "app:v2" and seen["return_state"]
    assert seen["app"] == "sample-api" and "app:sample-api" in seen["tags"]
    crashed, silent = recover_triggers(env)
    for event in ("prefect.flow-run.Crashed", "prefect.flow-run.heartbeat"):
        trigger = crashed if event.endswith("Crashed") else silent
        assert trigger.covers(run_event(event, "deploy", seen["tags"]))
