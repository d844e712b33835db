"""Several apps per environment: which app a command means, and how an app's file overlays
its environment's.

An environment file ``deployments/<env>.yaml`` describes the environment's own (default) app
and the settings every app there shares; each further app has ``deployments/apps/<app>/<env>.yaml``
holding only what differs. Pure: plain data in, plain data out.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bascule.errors import UsageError

__all__ = ["APPS_DIR", "choose_app", "overlay", "overlay_file"]

# Beside the environment files: apps/<app>/<env>.yaml.
APPS_DIR = "apps"


def overlay_file(deployments_dir: Path, app: str, environment: str) -> Path:
    """Where the settings of ``app`` in ``environment`` live, when it is not the default app."""
    return deployments_dir / APPS_DIR / app / f"{environment}.yaml"


def overlay(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top: mappings merge key by key, all else (lists too)
    is replaced, so an app that lists its own checks gets exactly those."""
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = overlay(below, value)
        else:
            out[key] = value
    return out


def choose_app(environment: str, requested: str | None, apps: Sequence[str]) -> str:
    """The app a command acts on: ``requested`` if it is one of ``apps`` (the environment's,
    its default first), else the only one. UsageError (exit 2) naming the apps otherwise."""
    listed = ", ".join(apps)
    if requested is None:
        if len(apps) == 1:
            return apps[0]
        raise UsageError(f"{environment} has several apps ({listed}) — say which with --app NAME")
    if requested in apps:
        return requested
    close = difflib.get_close_matches(requested, apps, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"{environment} has no app {requested!r}{maybe} — its apps: {listed} (an app other "
        f"than the environment file's own is {APPS_DIR}/<app>/{environment}.yaml)"
    )
