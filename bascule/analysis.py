"""The Prometheus analysis gate's decisions, as Argo Rollouts' AnalysisTemplate defines them
(``successCondition``, ``failureLimit``, ``inconclusiveLimit``), evaluated from the flow.

Pure: conditions are parsed here (a small grammar, never ``eval``), query templates are
filled in, each evaluation gets its verdict and the gate its outcome from the evaluations so
far. The HTTP call to Prometheus is tasks/analysis.py's.
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Phase = Literal["preview", "active"]
Policy = Literal["fail", "pass", "inconclusive"]

# What a query may name as {placeholder}. A bare `{word}` is never valid PromQL (a label
# matcher needs an operator), so these cannot be mistaken for a selector.
PLACEHOLDERS: dict[str, str] = {
    "namespace": "the environment's namespace",
    "app": "the app's name",
    "environment": "the environment's name",
    "color": "the color under analysis (the new one: preview's pods before the switch)",
    "release": "the release id of the color under analysis",
    "old_color": "the color serving before this deploy (the baseline); empty on a first deploy",
    "old_release": "the release id serving before this deploy; empty on a first deploy",
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OP = "|".join(re.escape(op) for op in _OPERATORS)
_COMPARISON = re.compile(
    rf"\s*(?:result\s*({_OP})\s*({_NUMBER})|({_NUMBER})\s*({_OP})\s*result)\s*"
)
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


class Verdict(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Comparison:
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.bound)


@dataclass(frozen=True)
class Condition:
    """Comparisons of ``result`` with numbers, all of which must hold (``and``)."""

    text: str
    comparisons: tuple[Comparison, ...]

    def holds(self, value: float) -> bool:
        return all(c.holds(value) for c in self.comparisons)


def parse_condition(text: str) -> Condition:
    """``result < 0.01``, ``result >= 1``, ``0.5 <= result and result <= 2``.

    ValueError, saying what to write, for anything else.
    """
    parts = re.split(r"\band\b", text)
    comparisons = []
    for part in parts:
        m = _COMPARISON.fullmatch(part)
        if m is None:
            raise ValueError(
                f"{part.strip() or text!r} is not a comparison — write `result OP NUMBER` with "
                f"OP one of {', '.join(_OPERATORS)}, joined by `and`, e.g. `result < 0.01`"
            )
        if m.group(1):
            comparisons.append(Comparison(m.group(1), float(m.group(2))))
        else:
            comparisons.append(Comparison(_FLIPPED[m.group(4)], float(m.group(3))))
    return Condition(text.strip(), tuple(comparisons))


def placeholders(
    namespace: str,
    app: str,
    environment: str,
    color: str,
    release: str,
    old_color: str | None,
    old_release: str | None,
) -> dict[str, str]:
    """The value of each of PLACEHOLDERS for one analysis."""
    return {
        "namespace": namespace,
        "app": app,
        "environment": environment,
        "color": color,
        "release": release,
        "old_color": old_color or "",
        "old_release": old_release or "",
    }


def placeholders_in(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def unknown_placeholders(template: str) -> list[str]:
    return sorted(placeholders_in(template) - PLACEHOLDERS.keys())


def render(template: str, values: Mapping[str, str]) -> str:
    """The query with each ``{placeholder}`` replaced; the rest of the PromQL untouched."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@dataclass(frozen=True)
class Sample:
    """What Prometheus answered: the values of the result's series (a scalar is one), or
    why there is no answer (``error``); ``unreachable`` when Prometheus itself did not
    answer, rather than refusing the query."""

    values: tuple[float, ...] = ()
    error: str | None = None
    unreachable: bool = False


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one query, as the report and the artifact show it."""

    name: str
    phase: Phase
    query: str  # as sent, placeholders filled in
    condition: str
    values: tuple[float, ...]
    verdict: Verdict
    detail: str
    at: float  # epoch seconds

    @property
    def value(self) -> str:
        if not self.values:
            return "-"
        return ", ".join(f"{v:.6g}" for v in self.values)


def judge(
    sample: Sample, condition: Condition, no_data: Policy, unreachable: Policy
) -> tuple[Verdict, str]:
    """The verdict of one evaluation. Every series must meet the condition; no series (or
    only NaN, as 0/0 gives with no traffic) follows ``no_data``, an unanswered request
    ``unreachable``; a query Prometheus refused fails, so a typo never passes."""
    if sample.error is not None:
        if sample.unreachable:
            return _by_policy(unreachable, f"Prometheus unreachable: {sample.error}")
        return Verdict.FAILED, f"query refused: {sample.error}"
    values = [v for v in sample.values if not math.isnan(v)]
    if not values:
        return _by_policy(no_data, "no data")
    bad = [v for v in values if not condition.holds(v)]
    if bad:
        return Verdict.FAILED, f"{bad[0]:.6g} does not meet {condition.text}"
    return Verdict.SUCCESSFUL, f"meets {condition.text}"


def _by_policy(policy: Policy, why: str) -> tuple[Verdict, str]:
    verdict = {
        "fail": Verdict.FAILED,
        "pass": Verdict.SUCCESSFUL,
        "inconclusive": Verdict.INCONCLUSIVE,
    }[policy]
    return verdict, f"{why}: counted as {verdict} (policy {policy})"


@dataclass(frozen=True)
class GateOutcome:
    failed: bool
    reason: str = ""


def decide(
    evaluations: Iterable[Evaluation], failure_limit: int, inconclusive_limit: int
) -> GateOutcome:
    """The gate fails once any query has more failed evaluations than ``failure_limit``
    or more inconclusive ones than ``inconclusive_limit``; Argo pauses on the latter,
    with nobody to resume a flow it counts as a failure here."""
    counts: Counter[tuple[str, Verdict]] = Counter()
    limits = {Verdict.FAILED: failure_limit, Verdict.INCONCLUSIVE: inconclusive_limit}
    for e in evaluations:
        counts[(e.name, e.verdict)] += 1
        limit = limits.get(e.verdict)
        if limit is not None and counts[(e.name, e.verdict)] > limit:
            return GateOutcome(
                True,
                f"analysis {e.name!r}: {counts[(e.name, e.verdict)]} {e.verdict} "
                f"evaluation(s), more than {limit} allowed; last: {e.detail}",
            )
    return GateOutcome(False)


def summary(evaluations: Sequence[Evaluation]) -> str:
    counts = Counter(e.verdict for e in evaluations)
    return ", ".join(f"{counts[v]} {v}" for v in Verdict if counts[v]) or "no evaluations"
