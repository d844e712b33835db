"""The Kubernetes work pool's base job template: prefect-kubernetes' own default with
Bascule's defaults filled in (README: Flows as Kubernetes Jobs).

Pure: takes the default template as plain data (``prefect work-pool
get-default-base-job-template --type kubernetes``) and returns a new one; no Prefect import.

What a Job of the pool gets, unless a deployment or a run overrides the variable:
- ``image``: the flow image, Bascule at one commit (tests/cluster/flow-image.sh builds it);
- ``service_account_name``: ``bascule``, the environment's least-privilege account
  (``bascule rbac ENV`` applied in each app namespace the Jobs run in, ``namespace``); no
  kubeconfig is mounted, the flows use the pod's in-cluster configuration;
- a container security context that Pod Security ``restricted`` admits;
- ``env``: ``PREFECT_API_URL`` as pods reach the server (the worker's own URL may be one
  only its machine reaches) and the heartbeat the recovery triggers of prefect.yaml expect.
  A deployment's or run's ``env`` replaces this whole mapping: repeat both there;
- ``command``: ``python3 -m bascule.flows.job``, which exits with ``bascule deploy``'s exit code;
- the optional ConfigMap ``bascule-deployments`` of the Job's namespace mounted at
  ``CONFIG_MOUNT``: a run that passes ``config_dir=/etc/bascule/deployments`` reads the
  environments' files from there instead of the image's ``deployments/``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bascule.manifests import restricted_context

SERVICE_ACCOUNT = "bascule"
COMMAND = "python3 -m bascule.flows.job"
CONFIG_MAP = "bascule-deployments"
CONFIG_MOUNT = "/etc/bascule/deployments"
# Where the flow image holds Bascule's code at its commit: the deployments' working directory.
WORKDIR = "/opt/bascule/app"
# As often as prefect.yaml's process pool has runs beat, and `bascule deploy` (checked by
# tests/unit/test_recover_triggers.py): the recover automation's heartbeat trigger sees them.
HEARTBEAT_SECONDS = 30
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
# The image's user (nobody); with restricted_context() on the container.
POD_SECURITY_CONTEXT: Mapping[str, Any] = {"runAsNonRoot": True}


@dataclass(frozen=True)
class JobSettings:
    image: str
    api_url: str  # PREFECT_API_URL as the Job's pod reaches the server
    namespace: str = "default"
    service_account: str = SERVICE_ACCOUNT
    pull_policy: str = "IfNotPresent"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"image pull policy {self.pull_policy!r} is not one of {', '.join(PULL_POLICIES)}"
            )
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"PREFECT_API_URL {self.api_url!r} is not an http(s) URL")


def default_env(settings: JobSettings) -> dict[str, str]:
    """The Jobs' environment: the server as pods reach it, and the heartbeat the recovery
    triggers of prefect.yaml expect (as ``bascule deploy`` beats)."""
    return {
        "PREFECT_API_URL": settings.api_url,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        **settings.extra_env,
    }


def job_template(default: Mapping[str, Any], settings: JobSettings) -> dict[str, Any]:
    """``default`` with Bascule's defaults; ``default`` itself is left unchanged."""
    template: dict[str, Any] = copy.deepcopy(dict(default))
    try:
        props = template["variables"]["properties"]
        job = template["job_configuration"]["job_manifest"]
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"not a Kubernetes base job template: no {exc}") from None
    defaults = {
        "image": settings.image,
        "image_pull_policy": settings.pull_policy,
        "service_account_name": settings.service_account,
        "namespace": settings.namespace,
        "command": COMMAND,
        "env": default_env(settings),
    }
    for name, value in defaults.items():
        if name not in props:
            raise ValueError(f"not a Kubernetes base job template: no variable {name!r}")
        props[name]["default"] = value
    pod["volumes"] = config_volumes()
    container["volumeMounts"] = config_mounts()
    container["workingDir"] = WORKDIR
    # The image's user (nobody); nothing in a flow needs root, nor any privilege: Pod
    # Security `restricted`, which app namespaces enforce.
    pod["securityContext"] = dict(POD_SECURITY_CONTEXT)
    container["securityContext"] = restricted_context()
    return template


def config_volumes() -> list[dict[str, Any]]:
    """The pod's one volume, the optional ConfigMap of the environments' files; and its mount
    (the Kubernetes worker's policy allows these and no others)."""
    return [{"name": "deployments", "configMap": {"name": CONFIG_MAP, "optional": True}}]


def config_mounts() -> list[dict[str, Any]]:
    return [{"name": "deployments", "mountPath": CONFIG_MOUNT, "readOnly": True}]
