"""The bench's summaries: a mean's and a paired ratio's 95% bootstrap intervals."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.stats import figure_lines, mean_interval, ratio_interval


def test_a_mean_interval_holds_the_mean_and_narrows_with_more_rounds() -> None:
    rng = random.Random(1)
    few = [rng.gauss(5, 1) for _ in range(8)]
    many = [rng.gauss(5, 1) for _ in range(200)]
    small, large = mean_interval(few, seed=3), mean_interval(many, seed=3)
    assert small.value == pytest.approx(statistics.fmean(few))
    assert small.low < small.value < small.high
    assert large.low < 5 < large.high
    assert large.high - large.low < (small.high - small.low) / 2


def test_the_same_seed_gives_the_same_interval_and_constant_rounds_none_wide() -> None:
    values = [1.0, 2.0, 4.0, 3.0]
    assert mean_interval(values, seed=7) == mean_interval(values, seed=7)
    flat = mean_interval([2.5] * 5, seed=7)
    assert (flat.value, flat.low, flat.high) == (2.5, 2.5, 2.5)


def test_a_mean_interval_covers_the_true_mean_about_95_times_in_100() -> None:
    rng = random.Random(11)
    covered = 0
    for trial in range(100):
        sample = [rng.expovariate(1.0) for _ in range(30)]
        est = mean_interval(sample, seed=trial, resamples=500)
        covered += est.low <= 1.0 <= est.high
    assert 82 <= covered <= 99  # a percentile bootstrap runs a little under 95% at 30 rounds


def test_a_ratio_of_means_is_paired_by_round() -> None:
    # Each round's machine moment slows both tools alike: paired, the ratio is sure of 2.
    moment = [1.0, 5.0, 2.0, 9.0, 3.0, 7.0]
    ours = [2 * m for m in moment]
    est = ratio_interval(ours, moment, seed=5)
    assert est.value == pytest.approx(2.0)
    assert est.low == pytest.approx(2.0) and est.high == pytest.approx(2.0)
    # Unpaired (the other tool's rounds shuffled), the same means would not be as sure.
    shuffled = [1.0 * 2, 9.0 * 2, 3.0 * 2, 5.0 * 2, 7.0 * 2, 2.0 * 2]
    loose = ratio_interval(shuffled, moment, seed=5)
    assert loose.value == pytest.approx(2.0)
    assert loose.high - loose.low > 0.5


def test_a_ratio_refuses_unpaired_or_too_few_rounds() -> None:
    with pytest.raises(ValueError, match="pair them"):
        ratio_interval([1.0, 2.0], [1.0, 2.0, 3.0], seed=1)
    with pytest.raises(ValueError, match="at least 2"):
        ratio_interval([1.0], [1.0], seed=1)
    with pytest.raises(ValueError, match="positive"):
        ratio_interval([1.0, 2.0], [0.0, 2.0], seed=1)


def test_figure_lines_print_mean_interval_median_and_rounds() -> None:
    lines = figure_lines("x_seconds", [1.0, 2.0, 6.0], seed=2)
    names = [line.split("=", 1)[0] for line in lines]
    assert names == ["x_seconds", "x_seconds_ci95", "x_seconds_median", "x_seconds_rounds"]
    assert lines[0] == "x_seconds=3.00"
    assert lines[2] == "x_seconds_median=2.00"
    assert lines[3] == "x_seconds_rounds=1.00,2.00,6.00"
    low, high = (float(v) for v in lines[1].split("=", 1)[1].split(".."))
    assert 1.0 <= low < 3.0 < high <= 6.0
