"""A bench's rounds summed up: the mean with a 95% interval, the median, and ratios of two
tools' means with theirs. Intervals by a seeded bootstrap over the rounds; a ratio's is
paired (round i of both tools resampled together), so what one round's moment of the
machine did to both tools stays together. Medians of few rounds that move in steps of a
second swing from run to run (issue 24): a mean and its interval say how far to trust it."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def interval(self, digits: int = 2) -> str:
        return f"{self.low:.{digits}f}..{self.high:.{digits}f}"


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linear between neighbours."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _bootstrap(
    n: int, statistic: Callable[[list[int]], float], seed: int, resamples: int
) -> tuple[float, float]:
    """The central ``LEVEL`` interval of ``statistic`` over ``resamples`` resamplings (with
    replacement) of the round indices 0..n-1."""
    rng = random.Random(seed)
    rounds = range(n)
    values = sorted(statistic(rng.choices(rounds, k=n)) for _ in range(resamples))
    tail = (1 - LEVEL) / 2
    return _quantile(values, tail), _quantile(values, 1 - tail)


def _check(values: Sequence[float], what: str) -> None:
    if len(values) < 2:
        raise ValueError(f"{what}: {len(values)} round(s); an interval needs at least 2")


def mean_interval(values: Sequence[float], seed: int, resamples: int = RESAMPLES) -> Estimate:
    """The mean of ``values`` and its 95% bootstrap interval."""
    _check(values, "mean_interval")
    low, high = _bootstrap(
        len(values), lambda idx: statistics.fmean(values[i] for i in idx), seed, resamples
    )
    return Estimate(statistics.fmean(values), low, high)


def ratio_interval(
    ours: Sequence[float], theirs: Sequence[float], seed: int, resamples: int = RESAMPLES
) -> Estimate:
    """mean(ours) ÷ mean(theirs) and its 95% paired bootstrap interval: ``ours[i]`` and
    ``theirs[i]`` are one round's and are resampled together."""
    if len(ours) != len(theirs):
        raise ValueError(f"ratio_interval: {len(ours)} rounds against {len(theirs)}; pair them")
    _check(ours, "ratio_interval")
    if min(theirs) <= 0:
        raise ValueError("ratio_interval: the divisor's rounds must be positive")

    def ratio(idx: list[int]) -> float:
        return sum(ours[i] for i in idx) / sum(theirs[i] for i in idx)

    low, high = _bootstrap(len(ours), ratio, seed, resamples)
    return Estimate(ratio(list(range(len(ours)))), low, high)


def figure_lines(name: str, values: Sequence[float], seed: int, digits: int = 2) -> list[str]:
    """``name=mean``, ``name_ci95=low..high``, ``name_median=`` and every round."""
    est = mean_interval(values, seed)
    return [
        f"{name}={est.value:.{digits}f}",
        f"{name}_ci95={est.interval(digits)}",
        f"{name}_median={statistics.median(values):.{digits}f}",
        f"{name}_rounds={','.join(f'{v:.{digits}f}' for v in values)}",
    ]


def ratio_lines(
    name: str, ours: Sequence[float], theirs: Sequence[float], seed: int, digits: int = 2
) -> list[str]:
    """``name=ratio of means`` and ``name_ci95=low..high``."""
    est = ratio_interval(ours, theirs, seed)
    return [f"{name}={est.value:.{digits}f}", f"{name}_ci95={est.interval(digits)}"]
