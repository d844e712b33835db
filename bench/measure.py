"""Pure figures of the benchmark: read from a load driver's samples and the API server's
metrics text, so both tools are measured the same way, by what the outside saw."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

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
