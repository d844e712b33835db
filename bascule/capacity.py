"""Will the idle color fit? A pure estimate, before anything is deployed, from the nodes and
the pods bound to them, the way the scheduler's resource fit sees it: requests against
allocatable. Node selectors, affinity and volumes are left to the scheduler and a cluster
autoscaler may add nodes, so the answer is a warning for the report, never a refusal; the
scheduler's own verdict fails the deploy later (``readiness.unschedulable``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

Obj = dict[str, Any]
Room = dict[str, int]  # cpu in millicores, memory in bytes, pods: whole units, no rounding drift

RESOURCES = ("cpu", "memory", "pods")
_SUFFIXES = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    **{f"{p}i": 1024.0 ** (i + 1) for i, p in enumerate("KMGTPE")},
}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|([a-zA-Z]*))")


def quantity(value: str | float) -> float:
    """A Kubernetes resource quantity (``100m``, ``64Mi``, ``1e3``, ``2``) as a number."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.fullmatch(value.strip())
    if match is None or (match[3] or "") not in _SUFFIXES:
        raise ValueError(f"{value!r} is not a resource quantity")
    number, exponent, suffix = match.groups()
    return float(number) * (10.0 ** int(exponent) if exponent else _SUFFIXES[suffix or ""])


def _units(resource: str, value: str | float) -> int:
    # Kubernetes rounds up to its smallest unit too: a millicore, a byte.
    return math.ceil(round(quantity(value) * (1000 if resource == "cpu" else 1), 6))


def _requests(container: Obj) -> Room:
    asked = (container.get("resources") or {}).get("requests") or {}
    return {r: _units(r, asked[r]) for r in ("cpu", "memory") if r in asked}


def pod_requests(spec: Obj) -> Room:
    """What one pod of ``spec`` takes from a node: its containers' requests together, or its
    largest init container's if more (they run one at a time), plus the pod overhead."""
    total: Room = {"cpu": 0, "memory": 0, "pods": 1}
    for c in spec.get("containers", []):
        for r, v in _requests(c).items():
            total[r] += v
    for c in spec.get("initContainers", []):
        for r, v in _requests(c).items():
            total[r] = max(total[r], v)
    for r, v in (spec.get("overhead") or {}).items():
        if r in total:
            total[r] += _units(r, v)
    return total


def _tolerated(taint: Obj, tolerations: Sequence[Obj]) -> bool:
    for tol in tolerations:
        key_ok = tol.get("key") == taint.get("key") or (
            not tol.get("key") and tol.get("operator") == "Exists"
        )
        value_ok = tol.get("operator") == "Exists" or tol.get("value", "") == taint.get("value", "")
        if key_ok and value_ok and tol.get("effect") in (None, "", taint.get("effect")):
            return True
    return False


def _usable(node: Obj, tolerations: Sequence[Obj]) -> bool:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )
    blocking = [
        t
        for t in node.get("spec", {}).get("taints", [])
        if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(t, tolerations)
    ]
    return ready and not node.get("spec", {}).get("unschedulable") and not blocking


def free_room(
    nodes: Sequence[Obj], pods: Sequence[Obj], tolerations: Sequence[Obj]
) -> dict[str, Room]:
    """Allocatable minus the requests of the pods bound there, per node a pod may land on."""
    room = {
        n["metadata"]["name"]: {
            r: _units(r, n.get("status", {}).get("allocatable", {}).get(r, 0)) for r in RESOURCES
        }
        for n in nodes
        if _usable(n, tolerations)
    }
    for pod in pods:
        node = room.get(pod.get("spec", {}).get("nodeName", ""))
        if node is None or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for r, v in pod_requests(pod["spec"]).items():
            node[r] -= v
    return room


def _show(room: Mapping[str, int]) -> str:
    cpu, memory = room["cpu"], room["memory"]
    shown = f"{cpu / 1000:g}" if cpu % 1000 == 0 and cpu else f"{cpu}m"
    return f"cpu {shown}, memory {memory / 2**20:.0f}Mi"


def fit(nodes: Sequence[Obj], pods: Sequence[Obj], spec: Obj, replicas: int) -> tuple[bool, str]:
    """Whether ``replicas`` pods of ``spec`` find room on the nodes (first fit), and a line
    saying so for the report."""
    need = pod_requests(spec)
    room = free_room(nodes, pods, spec.get("tolerations", []))
    placed = 0
    for _ in range(replicas):
        node = next((n for n in room.values() if all(n[r] >= v for r, v in need.items())), None)
        if node is None:
            break
        for r, v in need.items():
            node[r] -= v
        placed += 1
    each = f"{replicas} new pods ({_show(need)} each)"
    if placed == replicas:
        return True, f"{each} fit in the free room of the usable nodes ({len(room)})"
    if not room:
        return False, f"{each} may not fit: no node is ready, schedulable and untainted for them"
    most = max(room.values(), key=lambda n: (n["cpu"], n["memory"]))
    return False, (
        f"{replicas - placed} of {each} may not fit: the freest of the usable nodes "
        f"({len(room)}) has {_show(most)} left"
    )
