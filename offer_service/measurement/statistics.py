"""Statistics of the measurement report: estimates with 95% confidence intervals.

- A proportion (take rate, click-through, attach rate, conversion, return rate): the Wilson score
  interval, which stays inside [0, 1] and behaves at 0 and at small counts.
- A difference of two independent proportions (conversion, treatment minus holdout): Newcombe's
  hybrid score interval (method 10 of Newcombe 1998), built from the two Wilson intervals.
- A mean over units (revenue per visitor): the normal interval with the sample variance; a
  difference of two means (incremental revenue per visitor): Welch's unpooled standard error.
- A ratio of sums over units (AOV = revenue / orders with visitors as the units): the
  delta-method (linearised) interval, which accounts for visitors placing several orders.
All functions are pure; sums are accumulated in `Moments` and `RatioMoments` so that a report
streams through its data once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The two-sided 95% normal quantile.
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its interval; all None when there is nothing to estimate from."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, digits)

        ci = None if self.low is None or self.high is None else [r(self.low), r(self.high)]
        return {"value": r(self.value), "ci": ci}


NOTHING = Estimate(None)


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for x successes in n trials (n > 0, 0 <= x <= n)."""
    p = x / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(x: int, n: int, z: float = Z95) -> Estimate:
    """x / n with its Wilson interval: x of the n units, so 0 <= x <= n (a numerator counted
    from other traffic than its denominator is a bug, not a rate above 1)."""
    if n <= 0:
        return NOTHING
    if not 0 <= x <= n:
        raise ValueError(f"a proportion of {x} in {n}: the count must be between 0 and {n}")
    p = x / n
    low, high = wilson(x, n, z)
    # The interval holds p exactly; rounding in `wilson` must not leave it out at 0 or 1.
    return Estimate(p, min(low, p), max(high, p))


def difference_of_proportions(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Estimate:
    """p1 - p2 with Newcombe's hybrid score interval."""
    if n1 <= 0 or n2 <= 0:
        return NOTHING
    x1, x2 = min(max(x1, 0), n1), min(max(x2, 0), n2)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Estimate(d, low, high)


@dataclass(slots=True)
class Moments:
    """Count, sum and sum of squares of a quantity over units (for example visitors)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.total_sq += x * x

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator); 0 below two units."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


def mean(m: Moments, z: float = Z95) -> Estimate:
    """The mean with its normal interval."""
    if m.n == 0:
        return NOTHING
    mu = m.total / m.n
    half = z * math.sqrt(m.variance / m.n)
    return Estimate(mu, mu - half, mu + half)


def difference_of_means(a: Moments, b: Moments, z: float = Z95) -> Estimate:
    """mean(a) - mean(b) with Welch's (unpooled) standard error."""
    if a.n == 0 or b.n == 0:
        return NOTHING
    d = a.total / a.n - b.total / b.n
    half = z * math.sqrt(a.variance / a.n + b.variance / b.n)
    return Estimate(d, d - half, d + half)


@dataclass(slots=True)
class RatioMoments:
    """Sums over units of a denominator x and a numerator y, for the ratio sum(y) / sum(x)."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.syy += y * y
        self.sxy += x * y


def ratio(m: RatioMoments, z: float = Z95) -> Estimate:
    """sum(y) / sum(x) with the delta-method interval:
    Var(R) ~ sum((y_i - R x_i)^2) / (n (n - 1) xbar^2)."""
    if m.n == 0 or m.sx <= 0:
        return NOTHING
    r = m.sy / m.sx
    if m.n < 2:
        return Estimate(r, r, r)
    residual = max(0.0, m.syy - 2 * r * m.sxy + r * r * m.sxx)
    xbar = m.sx / m.n
    half = z * math.sqrt(residual / (m.n * (m.n - 1))) / xbar
    return Estimate(r, r - half, r + half)


def scaled(e: Estimate, factor: float) -> Estimate:
    """The estimate and its interval multiplied by a known positive constant."""
    if e.value is None:
        return e
    low = None if e.low is None else e.low * factor
    high = None if e.high is None else e.high * factor
    return Estimate(e.value * factor, low, high)
