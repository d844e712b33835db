"""What an environment's Kubernetes worker agrees to start as a Job (bascule/kubeworker.py):
the run's rules of bascule/runpolicy.py, and the Job itself, checked against the worker's
local settings. Pure: plain data in, a refusal or None out.

The Job a run gets is what the pool's base job template, the deployment's and the run's job
variables make of it, and each of those can be edited with a Prefect API credential. So the
worker checks the resolved job configuration (before Prefect adds its own labels and
variables for the run) against what Bascule's template (bascule/workpool.py) would make
with the worker's own image, account, server URL and namespaces: one container running
flows/job.py from the worker's image, as the environment's ``bascule`` ServiceAccount, in
one of its namespaces, with the template's environment and config mount and nothing else.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bascule.manifests import restricted_context
from bascule.runpolicy import Policy, Refusal, Submitted, check_run
from bascule.workpool import (
    COMMAND,
    POD_SECURITY_CONTEXT,
    PULL_POLICIES,
    SERVICE_ACCOUNT,
    WORKDIR,
    JobSettings,
    config_mounts,
    config_volumes,
    default_env,
)

# The one pull step a `*-kubernetes` deployment may have (prefect.yaml): the image's code
# directory. The Job never runs it (flows/job.py starts the engine with the fixed entrypoint).
IN_IMAGE_PULL_STEPS: list[dict[str, Any]] = [
    {"prefect.deployments.steps.set_working_directory": {"directory": WORKDIR}}
]
# Where the worker puts the flow's fixed entrypoint in the Job's environment, for flows/job.py
# (the variable prefect.flow_engine.load_flow reads).
ENTRYPOINT_ENV = "PREFECT__FLOW_ENTRYPOINT"
# The keys Bascule's template gives a Job, its pod and its container; any other (an init
# container, a host namespace, a node, envFrom, a port, ...) is refused.
_JOB_KEYS = {"apiVersion", "kind", "metadata", "spec"}
_JOB_SPEC_KEYS = {"backoffLimit", "template", "ttlSecondsAfterFinished"}
_POD_KEYS = {
    "containers", "completions", "parallelism", "restartPolicy", "serviceAccountName",
    "volumes", "securityContext",
}  # fmt: skip
_CONTAINER_KEYS = {
    "name", "image", "imagePullPolicy", "args", "env", "volumeMounts", "workingDir",
    "securityContext", "resources",
}  # fmt: skip
_FIX = "remove it from the run's and the deployment's job variables and the pool's template"


@dataclass(frozen=True)
class JobPolicy:
    """A Kubernetes worker's local settings: ``run`` as a process worker's, its namespaces
    the ones its Jobs may run in; the flow image and the server URL as pods reach it."""

    run: Policy
    image: str
    api_url: str

    def env(self) -> dict[str, str]:
        """The environment Bascule's template gives a Job (PREFECT_API_URL, heartbeat)."""
        return default_env(JobSettings(self.image, self.api_url))


def check_kubernetes_run(policy: Policy, run: Submitted) -> Refusal | None:
    """runpolicy's rules for a run of a `*-kubernetes` deployment: the same, except that its
    one in-image pull step is allowed (and never run)."""
    if list(run.pull_steps) not in ([], IN_IMAGE_PULL_STEPS):
        return Refusal(
            "pull-steps",
            f"deployment {run.deployment} has pull steps other than the image's directory",
            "the Job runs the image's code with the flow's fixed entrypoint and never a "
            "deployment's pull steps; register it from prefect.yaml",
        )
    return check_run(policy, replace(run, pull_steps=()))


def check_job(policy: JobPolicy, job: Mapping[str, Any]) -> Refusal | None:
    """The first rule the resolved job configuration ``job`` breaks: ``namespace``,
    ``command``, ``env``, ``labels``, ``annotations``, ``cluster_config`` (set or not) and
    ``job_manifest``, as plain data."""
    manifest = job.get("job_manifest") or {}
    try:
        spec = manifest["spec"]
        template = spec["template"]
        pod = template["spec"]
        containers = pod["containers"]
    except (KeyError, TypeError):
        return Refusal("job", "the job manifest has no pod template", _FIX)
    if job.get("cluster_config"):
        return Refusal(
            "cluster",
            "the job variable cluster_config is set",
            f"the worker creates Jobs with its own credentials; {_FIX}",
        )
    namespaces = {job.get("namespace"), (manifest.get("metadata") or {}).get("namespace")}
    outside = sorted(str(ns) for ns in namespaces - policy.run.namespaces)
    if outside:
        return Refusal(
            "namespace",
            f"the Job would run in namespace {', '.join(outside)}",
            f"the {policy.run.environment} worker's Jobs run only in "
            f"{', '.join(sorted(policy.run.namespaces))}: give one of those as `namespace`",
        )
    metadata = manifest.get("metadata") or {}
    if (
        any(job.get(key) or metadata.get(key) for key in ("labels", "annotations"))
        or set(metadata) - {"namespace", "generateName", "labels", "annotations"}
        or set(template) - {"spec"}
    ):
        return Refusal(
            "labels",
            "the Job or its pod gets labels or annotations of the run's choosing",
            f"the worker labels the Job itself; {_FIX}",
        )
    extra = sorted(
        (set(manifest) - _JOB_KEYS) | (set(spec) - _JOB_SPEC_KEYS) | (set(pod) - _POD_KEYS)
    )
    if manifest.get("kind") != "Job" or extra:
        return Refusal("job", f"the job manifest sets {', '.join(extra) or 'another kind'}", _FIX)
    if not isinstance(containers, list) or len(containers) != 1:
        return Refusal("containers", "the pod does not have exactly one container", _FIX)
    (container,) = containers
    extra = sorted(set(container) - _CONTAINER_KEYS)
    if extra:
        return Refusal("container", f"the container sets {', '.join(extra)}", _FIX)
    return _check_container(policy, job, pod, container)


def _check_container(
    policy: JobPolicy, job: Mapping[str, Any], pod: Mapping[str, Any], container: Mapping[str, Any]
) -> Refusal | None:
    if container.get("image") != policy.image or container.get("imagePullPolicy") not in (
        *PULL_POLICIES,
        None,
    ):
        return Refusal(
            "image",
            f"the Job's image is {container.get('image')!r}",
            f"the {policy.run.environment} worker runs only its own flow image, "
            f"{policy.image}; {_FIX}",
        )
    if not _is_command(container.get("args")) or not _is_command(job.get("command")):
        return Refusal(
            "command",
            f"the Job's command is {container.get('args')!r}",
            f"the Job runs {COMMAND!r} (flows/job.py); {_FIX}",
        )
    if container.get("workingDir") != WORKDIR:
        return Refusal("working-dir", f"the Job's workingDir is not {WORKDIR}", _FIX)
    if pod.get("serviceAccountName") != SERVICE_ACCOUNT:
        return Refusal(
            "service-account",
            f"the Job would run as ServiceAccount {pod.get('serviceAccountName')!r}",
            f"flows run as the environment's {SERVICE_ACCOUNT!r} account (bascule rbac); {_FIX}",
        )
    if pod.get("volumes") != config_volumes() or container.get("volumeMounts") != config_mounts():
        return Refusal(
            "volumes",
            "the pod's volumes or mounts are not the template's config mount alone",
            _FIX,
        )
    if not _same_env(container.get("env"), job.get("env"), policy.env()):
        return Refusal(
            "env",
            f"the Job's environment is not the template's ({', '.join(policy.env())})",
            f"a Job's environment is the worker's own; {_FIX}",
        )
    if (
        pod.get("securityContext") != POD_SECURITY_CONTEXT
        or container.get("securityContext") != restricted_context()
        or pod.get("restartPolicy") != "Never"
    ):
        return Refusal(
            "security-context",
            "the pod's or container's securityContext or restartPolicy is not the template's",
            _FIX,
        )
    return None


def _is_command(args: object) -> bool:
    if isinstance(args, str):
        return shlex.split(args) == shlex.split(COMMAND)
    return isinstance(args, Sequence) and list(args) == shlex.split(COMMAND)


def _same_env(in_manifest: object, variable: object, expected: Mapping[str, str]) -> bool:
    """The container's ``env`` is the template's ``{{ env }}`` and that is ``expected``."""
    return in_manifest == variable and _as_dict(variable) == dict(expected)


def _as_dict(env: object) -> dict[str, Any] | None:
    if isinstance(env, Mapping):
        return {str(k): v for k, v in env.items() if v is not None}
    return None
