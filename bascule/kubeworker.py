"""Bascule's Kubernetes worker: prefect-kubernetes' worker, one per environment, on that
environment's pool ``bascule-<env>-kubernetes``, which starts a run as a Job only if both
the run and the Job pass its local policy (bascule/jobpolicy.py):

    bascule worker staging --kubernetes --image registry.example/bascule-flows:0123456789ab \\
      --namespace bascule-staging --api-url http://prefect.prefect-system:4200/api

1. the run as the API describes it (flow, deployment, entrypoint, parameters; the
   deployment's pull steps none or the image's directory);
2. the Job the pool's base job template, the deployment's and the run's job variables
   resolve to: the worker's image, flows/job.py as command, the ``bascule`` account, one of
   its namespaces, the template's environment and config mount, nothing more.
A refused run ends Failed, named Refused, with the rule in its message (bascule/worker.py's
``refuse``), and no Job is created.

The Job's environment gets the flow's fixed entrypoint (PREFECT__FLOW_ENTRYPOINT), with
which flows/job.py starts Prefect's engine: the deployment's pull steps and entrypoint are
never run in the pod (``prefect flow-run execute`` would run both).

Like the process worker, it hears of a new run of its pool from Prefect's event stream
(bascule/wake.py); its poll remains as the fallback.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.abc
from prefect_kubernetes.worker import (
    KubernetesWorker,
    KubernetesWorkerJobConfiguration,
    KubernetesWorkerResult,
)
from pydantic import PrivateAttr

from bascule.jobpolicy import ENTRYPOINT_ENV, JobPolicy, check_job, check_kubernetes_run
from bascule.runpolicy import ENTRYPOINTS, Refusal, kubernetes_pool_name
from bascule.wake import waking
from bascule.worker import refuse, submitted
from bascule.workpool import JobSettings, job_template

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun


class JobConfiguration(KubernetesWorkerJobConfiguration):  # type: ignore[misc]
    """prefect-kubernetes' job configuration; the Job as the pool, deployment and run
    resolve it is kept, as plain data, before Prefect adds its own labels and variables."""

    _asked: dict[str, Any] = PrivateAttr(default_factory=dict)

    def resolved(self) -> dict[str, Any]:
        """What the template and job variables made of the Job, as bascule/jobpolicy.py
        checks it (a copy)."""
        return copy.deepcopy(
            {
                "namespace": self.namespace,
                "command": self.command,
                "env": self.env,
                "labels": self.labels,
                "annotations": self.annotations,
                "cluster_config": self.cluster_config is not None,
                "job_manifest": self.job_manifest,
            }
        )

    def prepare_for_flow_run(self, *args: Any, **kwargs: Any) -> None:
        self._asked = self.resolved()
        super().prepare_for_flow_run(*args, **kwargs)


class BasculeKubernetesWorker(KubernetesWorker):  # type: ignore[misc]
    job_configuration = JobConfiguration
    _description = "Runs Bascule's flows for one environment as Kubernetes Jobs, under its policy."
    _display_name = "Bascule Kubernetes"

    def __init__(self, policy: JobPolicy, pull_policy: str = "IfNotPresent", **kwargs: Any):
        # The pool, if it has to be made, gets Bascule's template with this worker's settings.
        settings = JobSettings(
            policy.image, policy.api_url, min(policy.run.namespaces), pull_policy=pull_policy
        )
        default = KubernetesWorker.get_default_base_job_template()
        super().__init__(
            work_pool_name=kubernetes_pool_name(policy.run.environment, policy.run.app),
            base_job_template=job_template(default, settings),
            **kwargs,
        )
        self.policy = policy

    async def start(
        self,
        run_once: bool = False,
        with_healthcheck: bool = False,
        printer: Callable[..., None] = print,
    ) -> None:
        """Prefect's loops, the poll woken early by each new run of the pool."""
        pool = kubernetes_pool_name(self.policy.run.environment, self.policy.run.app)
        async with waking(pool, self.get_and_submit_flow_runs, not run_once):
            await super().start(run_once, with_healthcheck, printer)

    @classmethod
    def __dispatch_key__(cls) -> str:
        # Polls pools of type kubernetes, but leaves Prefect's registry entry of that type
        # (what `prefect worker start --type kubernetes` looks up) to prefect-kubernetes'.
        return "bascule-kubernetes"

    def refusal(self, flow_run: FlowRun, configuration: JobConfiguration) -> Refusal | None:
        return check_kubernetes_run(
            self.policy.run, submitted(flow_run, configuration)
        ) or check_job(self.policy, configuration._asked)

    def fix_entrypoint(self, flow_run: FlowRun, configuration: JobConfiguration) -> None:
        """The flow's fixed entrypoint in the Job's environment, for flows/job.py."""
        flow = configuration._related_objects.get("flow")
        entrypoint = ENTRYPOINTS[getattr(flow, "name", "")]
        container = configuration.job_manifest["spec"]["template"]["spec"]["containers"][0]
        env = [e for e in container.get("env") or [] if e.get("name") != ENTRYPOINT_ENV]
        container["env"] = [*env, {"name": ENTRYPOINT_ENV, "value": entrypoint}]

    async def run(
        self,
        flow_run: FlowRun,
        configuration: KubernetesWorkerJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> KubernetesWorkerResult:
        assert isinstance(configuration, JobConfiguration)
        refusal = self.refusal(flow_run, configuration)
        if refusal is not None:
            await refuse(self, flow_run, self.policy.run.environment, refusal)
            if task_status is not None:
                task_status.started(0)
            return KubernetesWorkerResult(identifier="refused", status_code=0)
        self.fix_entrypoint(flow_run, configuration)
        return await super().run(flow_run, configuration, task_status)

    async def _initiate_run(
        self, flow_run: FlowRun, configuration: KubernetesWorkerJobConfiguration
    ) -> None:
        assert isinstance(configuration, JobConfiguration)
        refusal = self.refusal(flow_run, configuration)
        if refusal is not None:
            await refuse(self, flow_run, self.policy.run.environment, refusal)
            return
        self.fix_entrypoint(flow_run, configuration)
        await super()._initiate_run(flow_run, configuration)
