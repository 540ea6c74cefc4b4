"""The report's statistics against hand computations and published values."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from offer_service.measurement.statistics import (
    Z95,
    Moments,
    RatioMoments,
    difference_of_means,
    difference_of_proportions,
    mean,
    proportion,
    ratio,
    wilson,
)


def test_wilson_interval_matches_the_hand_computation_for_5_of_20() -> None:
    # p = 0.25, z^2 = 3.841459; centre = (0.25 + z^2/40) / (1 + z^2/20) = 0.290281;
    # half = z / (1 + z^2/20) * sqrt(0.25 * 0.75 / 20 + z^2 / 1600) = 0.178420.
    low, high = wilson(5, 20)
    assert low == pytest.approx(0.111862, abs=1e-6)
    assert high == pytest.approx(0.468701, abs=1e-6)
    e = proportion(5, 20)
    assert e.value == 0.25 and e.contains(0.25)


def test_wilson_interval_stays_inside_zero_and_one_at_the_edges() -> None:
    low, high = wilson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-9)  # 0.277533
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and high <= 1.0
    assert low == pytest.approx(10 / (10 + Z95**2), abs=1e-9)


def test_a_proportion_lies_inside_its_own_interval_even_at_zero_and_all() -> None:
    # Unrounded, Wilson's bounds at 0 of n and n of n miss 0 and 1 by a rounding error for
    # some n (0 of 7, 10 of 10): 165 of the 45,450 counts below.
    for n in range(1, 301):
        for x in range(n + 1):
            e = proportion(x, n)
            assert e.low is not None and e.high is not None
            assert 0.0 <= e.low <= x / n <= e.high <= 1.0 and e.contains(x / n), (x, n)


def test_a_count_outside_zero_to_n_is_no_proportion() -> None:
    # An accept counted against impressions it did not follow gave a take rate of 1.5 with
    # the interval of 2 of 2: the report must never build such a figure.
    with pytest.raises(ValueError, match="between 0 and 2"):
        proportion(3, 2)
    with pytest.raises(ValueError):
        proportion(-1, 2)


def test_a_proportion_of_nothing_is_no_estimate() -> None:
    e = proportion(0, 0)
    assert e.value is None and e.as_dict() == {"value": None, "ci": None}


def test_newcombe_interval_matches_newcombe_1998_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II: 56/70 - 48/80, method 10
    # (hybrid score, no continuity correction): 0.2000, 95% CI 0.0524 to 0.3339.
    e = difference_of_proportions(56, 70, 48, 80)
    assert e.value == pytest.approx(0.2)
    assert e.low == pytest.approx(0.0524, abs=1e-4)
    assert e.high == pytest.approx(0.3339, abs=1e-4)


def test_mean_interval_is_the_normal_interval_with_the_sample_variance() -> None:
    m = Moments()
    for x in (1, 2, 3, 4):
        m.add(x)
    # mean 2.5, s^2 = 5/3, se = sqrt(5/3 / 4) = 0.645497, half = 1.959964 * 0.645497 = 1.265151
    e = mean(m)
    assert e.value == 2.5
    assert e.low == pytest.approx(1.234849, abs=1e-6)
    assert e.high == pytest.approx(3.765151, abs=1e-6)


def test_difference_of_means_uses_welchs_standard_error() -> None:
    a, b = Moments(), Moments()
    for x in (1, 2, 3, 4):
        a.add(x)
    for x in (0, 0, 1, 1, 3):
        b.add(x)
    # 2.5 - 1.0 = 1.5; se = sqrt((5/3)/4 + 1.5/5) = sqrt(0.716667) = 0.846562; half = 1.659230
    e = difference_of_means(a, b)
    assert e.value == pytest.approx(1.5)
    assert e.low == pytest.approx(-0.159230, abs=1e-6)
    assert e.high == pytest.approx(3.159230, abs=1e-6)


def test_ratio_interval_is_the_delta_method() -> None:
    m = RatioMoments()
    for x, y in ((1, 100), (2, 300), (1, 50)):
        m.add(x, y)
    # R = 450 / 4 = 112.5; residuals y - R x: -12.5, 75, -62.5; sum of squares 9687.5;
    # Var(R) = 9687.5 / (3 * 2 * (4/3)^2) = 908.203125; half = z * 30.136408 = 59.066
    e = ratio(m)
    assert e.value == 112.5
    half = Z95 * math.sqrt(9687.5 / (3 * 2 * (4 / 3) ** 2))
    assert half == pytest.approx(59.066, abs=1e-3)
    assert e.low == pytest.approx(112.5 - half)
    assert e.high == pytest.approx(112.5 + half)


def test_moments_agree_with_the_statistics_module() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(1 / 4000) if rng.random() < 0.3 else 0.0 for _ in range(500)]
    m = Moments()
    for v in values:
        m.add(v)
    assert m.mean == pytest.approx(statistics.fmean(values))
    assert m.variance == pytest.approx(statistics.variance(values))


def test_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    """Calibration: 2,000 simulated experiments with known truth."""
    rng = random.Random(11)
    covered = {"wilson": 0, "newcombe": 0, "welch": 0}
    trials = 2000
    for _ in range(trials):
        x1 = sum(rng.random() < 0.08 for _ in range(300))
        x2 = sum(rng.random() < 0.05 for _ in range(200))
        covered["wilson"] += proportion(x1, 300).contains(0.08)
        covered["newcombe"] += difference_of_proportions(x1, 300, x2, 200).contains(0.03)
        a, b = Moments(), Moments()
        for _ in range(300):
            a.add(rng.expovariate(1 / 50) if rng.random() < 0.3 else 0.0)  # mean 15
        for _ in range(200):
            b.add(rng.expovariate(1 / 50) if rng.random() < 0.2 else 0.0)  # mean 10
        covered["welch"] += difference_of_means(a, b).contains(5.0)
    for name, hits in covered.items():
        assert 0.93 <= hits / trials <= 0.97, (name, hits / trials)
