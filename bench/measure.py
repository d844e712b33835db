"""Pure figures of the benchmark: read from a load driver's samples and the API server's
metrics text, so both tools are measured the same way, by what the outside saw."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bascule.images import parse_image

# One APF counter line: every request the API server let through, by the FlowSchema it matched.
_DISPATCHED = re.compile(
    r"^apiserver_flowcontrol_dispatched_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$"
)
_FLOW_SCHEMA = re.compile(r'flow_schema="(?P<name>[^"]*)"')


def dispatched_requests(metrics: str) -> dict[str, int]:
    """Requests the API server dispatched so far, per FlowSchema, from its /metrics text."""
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        m = _DISPATCHED.match(line.strip())
        if not m:
            continue
        schema = _FLOW_SCHEMA.search(m["labels"])
        if schema:
            name = schema["name"]
            counts[name] = counts.get(name, 0) + int(float(m["value"]))
    return counts


def requests_between(
    before: Mapping[str, int], after: Mapping[str, int], schemas: Iterable[str]
) -> int:
    """The requests of ``schemas`` dispatched between two readings."""
    return sum(after.get(s, 0) - before.get(s, 0) for s in schemas)


def settled_at(samples: Iterable[Mapping[str, Any]], since: float, version: str) -> float:
    """When only ``version`` answered: the time of the first successful sample after
    ``since`` from which no other version answered any more. Failed samples neither
    settle nor unsettle (they are counted apart)."""
    answers = [s for s in samples if s["ok"] and s["t"] >= since]
    answers.sort(key=lambda s: s["t"])
    settled: float | None = None
    for s in answers:
        if s["version"] != version:
            settled = None
        elif settled is None:
            settled = s["t"]
    if settled is None:
        raise ValueError(f"{version} never answered alone after {since:.3f}")
    return settled


def seconds_to_first(asked: float, stamps: Iterable[str | None]) -> float:
    """Seconds from ``asked`` (epoch) to the earliest of ``stamps`` (ISO-8601 with a zone, as
    Prefect's API gives them; None for a moment that never came)."""
    times = [datetime.fromisoformat(s).timestamp() for s in stamps if s]
    if not times:
        raise ValueError("no timestamp to measure to")
    return min(times) - asked


def version(image: str) -> str:
    """What the sample app's /version answers for ``image``: its tag."""
    return parse_image(image).tag or ""


def failure_kinds(samples: Iterable[Mapping[str, Any]]) -> str:
    """The failed samples by kind (the error up to its first colon), e.g.
    ``ConnectionRefusedError:3,HTTP 503:1``, most frequent first; ``none`` when none failed."""
    kinds = Counter(str(s["error"]).split(":", 1)[0] for s in samples if not s["ok"])
    return ",".join(f"{k}:{n}" for k, n in kinds.most_common()) or "none"


def answering_before(samples: Iterable[Mapping[str, Any]], t: float) -> str | None:
    """The version of the last successful answer to a request sent before ``t``."""
    before = [s for s in samples if s["ok"] and s["t"] < t]
    return max(before, key=lambda s: s["t"])["version"] if before else None


@dataclass(frozen=True)
class Sighting:
    """A pod or Service as a watch showed it, at ``t`` (the bench's clock)."""

    t: float
    kind: Literal["pod", "service"]
    namespace: str
    name: str
    image: str = ""  # a pod's first container's
    ready: bool = False  # a pod's Ready condition
    selector: str = ""  # a Service's, as its JSON text


@dataclass(frozen=True)
class DeploySplit:
    """A deploy's time from the ask until only the new version answers, in the order it
    passes: the tool's (until the new pods exist), the kubelet's (until they are Ready), the
    tool's (until the active Service selects them), kube-proxy's (until the traffic moved)."""

    before_pods: float
    pods_start: float
    to_switch: float
    to_seen: float

    @property
    def own(self) -> float:
        """The tool's own part: what no pod start and no kube-proxy sync can hide."""
        return self.before_pods + self.to_switch


def split_deploy(
    sightings: Iterable[Sighting],
    namespace: str,
    asked: float,
    image: str,
    service: str,
    replicas: int,
    seen: float,
) -> DeploySplit:
    """Splits a deploy of ``image`` in ``namespace`` asked at ``asked`` and seen at ``seen``
    by what the watches saw: the first pod of ``image`` created since, the moment
    ``replicas`` of them were Ready, and the first change of the active Service's selector
    (``service``) since."""
    created: dict[str, float] = {}
    ready: set[str] = set()
    all_ready = switched = None
    selector_before: str | None = None
    for s in sorted(sightings, key=lambda s: s.t):
        if s.namespace != namespace:
            continue
        if s.kind == "service" and s.name == service:
            if s.t <= asked:
                selector_before = s.selector
            elif switched is None and s.selector != selector_before:
                switched = s.t
        elif s.kind == "pod" and s.image == image and s.t > asked:
            created.setdefault(s.name, s.t)
            (ready.add if s.ready else ready.discard)(s.name)
            if all_ready is None and len(ready) >= replicas:
                all_ready = s.t
    if not created or all_ready is None or switched is None:
        raise ValueError(
            f"the watches did not see {image} deployed in {namespace} after {asked:.3f}: "
            f"pods created {len(created)}, Ready at {all_ready}, switched at {switched}"
        )
    first = min(created.values())
    return DeploySplit(first - asked, all_ready - first, switched - all_ready, seen - switched)
