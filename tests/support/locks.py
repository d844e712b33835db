"""Watching the deploy lock from outside: who holds the Lease, and how long a killed
holder keeps a new deploy of the same app and environment waiting."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bascule import kube as k
from bascule.kube import Kube
from bascule.lease import ANNOTATION_SLOT
from tests.support import deploys
from tests.support.cluster import wait_for


def holding(kube: Kube, ns: str, app: str = "sample-app") -> str | None:
    """The holder of the app's Lease once it holds both locks (its Prefect slot lease is
    recorded on the Lease), else None."""
    current = kube.get_or_none(k.leases(ns, f"{app}-bascule-deploy"))
    if not current:
        return None
    holder = current["spec"].get("holderIdentity")
    recorded = ANNOTATION_SLOT in current["metadata"].get("annotations", {})
    return holder if holder and recorded else None


def wait_holding(kube: Kube, ns: str, other_than: str | None = None, timeout: float = 180) -> str:
    def held() -> str | None:
        holder = holding(kube, ns)
        return holder if holder != other_than else None

    return str(wait_for(held, timeout, interval=0.1, what=f"a lock holder other than {other_than}"))


def kill_and_retake(
    api: str, kube: Kube, ns: str, cfg: str, image: str, victim: subprocess.Popen[bytes], log: Path
) -> tuple[float, subprocess.Popen[bytes]]:
    """SIGKILLs ``victim`` (a `bascule deploy` process) once it holds the lock, starts a
    deploy of ``image`` at once, and returns the seconds from the kill until that deploy
    holds the lock, with its process."""
    victim_id = wait_holding(kube, ns)
    deploys.kill(victim)
    killed = time.monotonic()
    successor = deploys.start(api, "deploy", "--dir", cfg, "staging", "--image", image, log=log)
    wait_holding(kube, ns, other_than=victim_id, timeout=150)
    return time.monotonic() - killed, successor
