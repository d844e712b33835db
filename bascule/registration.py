"""The Prefect deployments of an environment, made from the ones Bascule's prefect.yaml ships.

prefect.yaml declares its example environments (dev, staging, production). An app team's
environments may be named anything (``deployments/<name>.yaml``): each gets the deployments of
a shipped model environment, its own name put wherever the model's stands (deployment names,
the ``environment`` parameter, the work pools, tags and the recover triggers' tag). Pure:
the parsed file in, the deployments out; ``bascule register`` hands them to ``prefect deploy``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Which shipped environment a new one is made like, when it names none: the least protected.
# Protection itself is never read from here (the worker's --protected, the environment's file).
DEFAULT_MODEL = "dev"
KUBERNETES_TAG = "kubernetes"


class RegistrationError(ValueError):
    """A model environment prefect.yaml does not declare."""


def models(spec: dict[str, Any]) -> list[str]:
    """The environments prefect.yaml declares deployments for, in its order."""
    seen: list[str] = []
    for dep in spec.get("deployments", []):
        env = dep.get("parameters", {}).get("environment")
        if env and env not in seen:
            seen.append(env)
    return seen


def _renamed(value: Any, model: str, environment: str) -> Any:
    """``value`` with every whole-word ``model`` (also inside bascule-<model>,
    prefect.tag.<model>) made ``environment``."""
    if isinstance(value, str):
        return re.sub(rf"(?<!\w){re.escape(model)}(?![\w])", environment, value)
    if isinstance(value, list):
        return [_renamed(item, model, environment) for item in value]
    if isinstance(value, dict):
        return {key: _renamed(item, model, environment) for key, item in value.items()}
    return value


def deployments_for(
    spec: dict[str, Any],
    environment: str,
    like: str | None = None,
    kubernetes: bool = False,
) -> list[dict[str, Any]]:
    """``environment``'s deployments: those of ``like`` (default: itself if prefect.yaml
    declares it, else ``DEFAULT_MODEL``) with its name in place of the model's; those of the
    Kubernetes pools only with ``kubernetes``."""
    known = models(spec)
    model = like or (environment if environment in known else DEFAULT_MODEL)
    if model not in known:
        raise RegistrationError(
            f"--like {model}: prefect.yaml has no deployments for it; use one of {', '.join(known)}"
        )
    return [
        _renamed(dep, model, environment)
        for dep in spec.get("deployments", [])
        if dep.get("parameters", {}).get("environment") == model
        and (kubernetes or KUBERNETES_TAG not in dep.get("tags", []))
    ]


def registration(
    spec: dict[str, Any],
    environments: Iterable[str],
    like: str | None = None,
    kubernetes: bool = False,
) -> dict[str, Any]:
    """prefect.yaml with only ``environments``' deployments: what ``prefect deploy --all``
    registers. The file's anchors are already expanded by its parser."""
    return {
        key: value for key, value in spec.items() if key not in ("deployments", "definitions")
    } | {
        "deployments": [
            dep for env in environments for dep in deployments_for(spec, env, like, kubernetes)
        ]
    }


def pools(spec: dict[str, Any]) -> list[str]:
    """The work pools a registration's deployments name, in order, once each."""
    return list(dict.fromkeys(dep["work_pool"]["name"] for dep in spec["deployments"]))
