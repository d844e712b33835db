"""Bascule's own Prefect worker: one per environment, on that environment's work pool, with
only that environment's credentials (its $KUBECONFIG, its secret sources).

    bascule worker production --repository https://github.com/acme/bascule.git

It runs a flow run only if the run passes its local policy (bascule/runpolicy.py), checked
here, in the worker, before any code of the run's commit executes:
1. the run as the API describes it (flow, deployment, entrypoint, pull steps, job
   variables, parameters);
2. the commit, in a checkout of the worker's repository made for the run: on the default
   branch and descending from the serving release's commit for a protected environment;
   the environment's file at that commit targets the worker's namespaces with its own
   credentials.
A refused run ends Failed, named Refused, with the rule in its message: not Crashed, which
would start the environment's recover automation for every refused attempt.

It hears of a new run of its pool from Prefect's event stream and submits it at once
(bascule/wake.py); its poll, every PREFECT_WORKER_QUERY_SECONDS, remains as the fallback.

The checkout (bascule/checkout.py) is a worktree of a mirror of the repository the worker
keeps in its cache directory, fetched for each run: the remote's default branch, branches
and tags as they are then, only new objects transferred. It is the app's repository:
configuration (``deployments/``, manifests, migrations), never code. A run that passes
starts Prefect's engine in the checkout (``python -P -m
bascule.flows.launch``), the flow loaded from the installed Bascule at the entrypoint this
worker fixes (PREFECT__FLOW_ENTRYPOINT): Prefect's engine then runs neither the deployment's
pull steps nor its entrypoint, and nothing of the checkout is imported. The worker never loads
a run's flow itself: on_crashed/on_cancellation hooks, which Prefect's process worker runs by
loading the deployment (pull steps included) in the worker, are not run.

That process is forked from the worker's fork server (bascule/forkserver.py), a process of
its own started with the worker that has imported Prefect and Bascule's flows already, so a
run skips their ~1.7 s import; if the server is gone or refuses, the run starts as a new
process, and the run's log says why. A server that died is started again for the next run, at
most once a minute.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.flows import Flow
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.states import Failed
from prefect.utilities.processutils import command_to_string, get_sys_executable
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)
from pydantic import PrivateAttr

from bascule import config as c
from bascule import kube as k
from bascule.checkout import clone, release
from bascule.flows.launch import LAUNCH
from bascule.forkserver import ForkServerStarter, KeptForkServer
from bascule.jobpolicy import ENTRYPOINT_ENV
from bascule.outcome import StateName
from bascule.runpolicy import (
    ENTRYPOINTS,
    Policy,
    Refusal,
    Submitted,
    check_checkout,
    check_run,
)
from bascule.wake import waking
from bascule.workpool import HEARTBEAT_SECONDS

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

WORKER_TYPE = "bascule"


class JobConfiguration(BaseJobConfiguration):
    """Prefect's base job configuration; what the pool, deployment and run asked for is
    kept aside before Prefect adds its own variables, for the policy to see."""

    _asked_command: str | None = PrivateAttr(default=None)
    _asked_env: dict[str, Any] = PrivateAttr(default_factory=dict)

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        self._asked_command = self.command
        self._asked_env = {key: v for key, v in (self.env or {}).items() if v is not None}
        super().prepare_for_flow_run(
            flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id
        )


class Variables(BaseVariables):
    """No variables of its own: nothing a run sets changes how it is run."""


class Result(BaseWorkerResult):
    pass


def submitted(
    flow_run: FlowRun,
    configuration: BaseJobConfiguration,
    command: str | None = None,
    env: Mapping[str, Any] | None = None,
) -> Submitted:
    """The run as the API describes it; ``command`` and ``env``: what the job variables ask
    for (a process pool's; a Kubernetes pool's are checked in its Job, bascule/jobpolicy.py)."""
    deployment = configuration._related_objects.get("deployment")
    flow = configuration._related_objects.get("flow")
    flow_name = getattr(flow, "name", None) or ""
    return Submitted(
        flow_name=flow_name,
        parameters=dict(flow_run.parameters or {}),
        deployment=f"{flow_name}/{deployment.name}" if deployment is not None else None,
        entrypoint=getattr(deployment, "entrypoint", None),
        pull_steps=list(getattr(deployment, "pull_steps", None) or []),
        command=command,
        env=env or {},
    )


async def refuse(
    worker: BaseWorker[Any, Any, Any], flow_run: FlowRun, environment: str, refusal: Refusal
) -> None:
    """Ends ``flow_run`` Failed, named Refused, with the rule in its message: not Crashed,
    which would start the environment's recover automation for every refused attempt."""
    message = refusal.message(environment)
    worker.get_flow_run_logger(flow_run).error(message)
    await worker.client.set_flow_run_state(
        flow_run.id, Failed(name=StateName.REFUSED, message=message), force=True
    )


def run_environment(prepared: Mapping[str, str | None], entrypoint: str) -> dict[str, str]:
    """A run's environment: the worker's own (its credentials), Prefect's variables for the
    run, the fixed entrypoint, and the heartbeat prefect.yaml's recover triggers expect;
    nothing the run asked for (the policy refused any)."""
    return {
        **os.environ,
        **{key: v for key, v in prepared.items() if v is not None},
        ENTRYPOINT_ENV: entrypoint,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }


async def _resolve_without_hooks(flow_run: FlowRun) -> Flow[..., Any]:
    """What the worker gives Prefect's hook runner instead of the run's flow: loading that
    would run the deployment's pull steps here, in the worker."""

    def nothing() -> None:
        return None

    # A fixed name: a run's own ("staging: registry/app:v2") holds characters a flow name may not.
    return Flow(fn=nothing, name="bascule-no-hooks")


class BasculeWorker(BaseWorker[JobConfiguration, Variables, Result]):
    type = WORKER_TYPE
    job_configuration = JobConfiguration
    job_configuration_variables = Variables
    _description = "Runs Bascule's flows for one environment, under its local policy."
    _display_name = "Bascule"
    _forks: KeptForkServer | None = None

    def __init__(self, policy: Policy, **kwargs: Any) -> None:
        super().__init__(work_pool_name=policy.pool, **kwargs)
        self.policy = policy

    async def start(
        self,
        run_once: bool = False,
        with_healthcheck: bool = False,
        printer: Callable[..., None] = print,
    ) -> None:
        """Prefect's loops, the poll woken early by each new run of the pool."""
        async with waking(self.policy.pool, self.get_and_submit_flow_runs, not run_once):
            await super().start(run_once, with_healthcheck, printer)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: JobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> Result:
        task_status = task_status or anyio.TASK_STATUS_IGNORED
        run = submitted(
            flow_run, configuration, configuration._asked_command, configuration._asked_env
        )
        refusal = check_run(self.policy, run)
        if refusal is not None:
            return await self._refuse(flow_run, refusal, task_status)
        with tempfile.TemporaryDirectory(prefix="bascule-run-") as tmp:
            checkout_dir = Path(tmp) / "checkout"
            try:
                try:
                    checkout = await anyio.to_thread.run_sync(
                        clone, self.policy, run.parameters.get("commit"), checkout_dir
                    )
                except (c.ConfigError, RuntimeError, k.KubeError) as exc:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    checkout_refusal: Refusal | None = Refusal(
                        "checkout", why, "fix the commit or the environment's file"
                    )
                else:
                    checkout_refusal = check_checkout(self.policy, checkout)
                if checkout_refusal is not None:
                    return await self._refuse(flow_run, checkout_refusal, task_status)
                env = run_environment(configuration.env, ENTRYPOINTS[run.flow_name])
                return await self._launch(flow_run, checkout_dir, env, task_status)
            finally:
                with anyio.CancelScope(shield=True):  # a cancelled run's checkout goes too
                    await anyio.to_thread.run_sync(release, self.policy.repository, checkout_dir)

    async def setup(self) -> None:
        await super().setup()
        self._forks = KeptForkServer([get_sys_executable(), *LAUNCH], os.environ, self._logger)

    async def teardown(self, *exc_info: Any) -> None:
        try:
            await super().teardown(*exc_info)  # waits for the runs the server forked
        finally:
            if self._forks is not None:
                await anyio.to_thread.run_sync(self._forks.stop)
                self._forks = None

    async def _refuse(
        self, flow_run: FlowRun, refusal: Refusal, task_status: anyio.abc.TaskStatus[int]
    ) -> Result:
        await refuse(self, flow_run, self.policy.environment, refusal)
        task_status.started(0)
        return Result(status_code=0, identifier="refused")

    async def _launch(
        self,
        flow_run: FlowRun,
        cwd: Path,
        env: dict[str, str],
        task_status: anyio.abc.TaskStatus[int],
    ) -> Result:
        """Prefect's engine in ``cwd``, as Prefect's process worker starts it, but through
        Bascule's launcher, forked from the fork server when it can, and with the hook runner
        given no flow (see ``_resolve_without_hooks``)."""
        logger = self.get_flow_run_logger(flow_run)
        logger.info("Starting the flow run's process")
        async with FlowRunExecutorContext() as ctx:
            starter = ForkServerStarter(
                self._forks.current() if self._forks is not None else None,
                logger,
                command=command_to_string([get_sys_executable(), *LAUNCH]),
                cwd=cwd,
                env=dict(env),
                stream_output=True,
                control_channel=ctx.control_channel,
            )
            executor = ctx.create_executor(
                flow_run, starter, resolve_flow=_resolve_without_hooks, propose_submitting=False
            )
            execution: FlowRunExecutionResult | None = None

            async def execute(
                *, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                nonlocal execution
                execution = await executor.submit(task_status=task_status)

            async with anyio.create_task_group() as group:
                handle = await group.start(execute)
                if handle.pid is None:
                    raise RuntimeError("the flow run's process has no pid")
                task_status.started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError("the flow run's process did not start")
        return Result(status_code=execution.status_code, identifier=str(execution.handle.pid))
