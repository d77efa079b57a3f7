"""The statistics behind the health gates, computed from counts so that rollups can feed them.

Every test here takes binned or counted data (a histogram per cohort, successes out of trials,
label counts) and returns a frozen result with its statistic and p-value. No scipy: the normal
survival function comes from `math.erfc`, the chi-square one from its closed form for integer
degrees of freedom, and the tests are checked against scipy's values in
`tests/unit/gates/test_stats.py`.

Invariants:
- Pure: no I/O, no clock, no randomness; the same counts give the same numbers.
- Every p-value is in [0, 1]; a test with no information (zero variance, an empty cohort) returns
  p = 1, never NaN, so a gate built on it cannot fail on it.
- Mann-Whitney U on a histogram treats the values sharing a bin as ties and applies the tie
  correction; with one bin per distinct value it equals the test on the raw values.
- Fisher's exact test sums hypergeometric probabilities computed with `math.lgamma`; it never
  rejects more often than its level, however few the trials (2 of 3 against 0 of 15 is p 0.0196,
  where the z-test claims 0.0004).
- Invalid arguments (negative counts, mismatched lengths, alpha outside (0, 1)) raise `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Alternative",
    "ChiSquare",
    "FisherExact",
    "MannWhitney",
    "TwoProportion",
    "check_proportions",
    "chi2_sf",
    "chi_square_homogeneity",
    "fisher_exact",
    "histogram_quantile",
    "holm_adjust",
    "hypergeometric_log_pmf",
    "mann_whitney_binned",
    "normal_sf",
    "population_stability_index",
    "two_proportion_z",
]

# PSI needs a floor for labels one cohort never produced (ln 0); 1e-4 is the usual choice and
# turns "a label appeared at 1 %" into a PSI contribution of about 0.05, not infinity.
_PSI_FLOOR = 1e-4


class Alternative(StrEnum):
    """Which difference counts as evidence: the canary's values `greater`, `less`, or either."""

    GREATER = "greater"
    LESS = "less"
    TWO_SIDED = "two-sided"


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the first sample: pairs (x, y) with x > y, plus half the ties
    z: float
    p_value: float
    effect: float  # U / (n_x n_y): P(X > Y) + P(X = Y) / 2; 0.5 means no shift


@dataclass(frozen=True)
class TwoProportion:
    rate_1: float
    rate_2: float
    z: float
    p_value: float


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float


@dataclass(frozen=True)
class FisherExact:
    rate_1: float
    rate_2: float
    odds_ratio: float  # conditional-free sample odds ratio, capped at 1e300 for JSON
    p_value: float


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _p_from_z(z: float, alternative: Alternative) -> float:
    if alternative is Alternative.GREATER:
        p = normal_sf(z)
    elif alternative is Alternative.LESS:
        p = normal_sf(-z)
    else:
        p = 2.0 * normal_sf(abs(z))
    return min(1.0, max(0.0, p))


def _counts(values: ArrayLike, what: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional")
    if array.size and (not np.all(np.isfinite(array)) or array.min() < 0):
        raise ValueError(f"{what} must be finite, non-negative counts")
    return array


def mann_whitney_binned(
    counts_x: ArrayLike, counts_y: ArrayLike, alternative: Alternative = Alternative.TWO_SIDED
) -> MannWhitney:
    """Mann-Whitney U of X against Y from their counts over the same ordered bins.

    Normal approximation with tie correction and continuity correction (scipy's
    `method="asymptotic"`); `greater` asks whether X tends to be larger than Y.
    """
    x, y = _counts(counts_x, "counts_x"), _counts(counts_y, "counts_y")
    if x.shape != y.shape:
        raise ValueError(f"bins differ: {x.shape[0]} against {y.shape[0]}")
    n_x, n_y = float(x.sum()), float(y.sum())
    if n_x == 0 or n_y == 0:
        return MannWhitney(0.0, 0.0, 1.0, 0.5)
    ties = x + y
    # The mid-rank of every value in a bin: the ranks below it plus the middle of its own run.
    midranks = np.cumsum(ties) - ties + (ties + 1.0) / 2.0
    u = float(x @ midranks) - n_x * (n_x + 1.0) / 2.0
    total = n_x + n_y
    mean = n_x * n_y / 2.0
    tie_term = float(np.sum(ties**3 - ties)) / (total * (total - 1.0))
    variance = n_x * n_y / 12.0 * ((total + 1.0) - tie_term)
    effect = u / (n_x * n_y)
    if variance <= 0.0:
        return MannWhitney(u, 0.0, 1.0, effect)
    sigma = math.sqrt(variance)
    delta = u - mean
    if alternative is Alternative.GREATER:
        z = (delta - 0.5) / sigma
    elif alternative is Alternative.LESS:
        z = (delta + 0.5) / sigma
    else:
        z = math.copysign(max(abs(delta) - 0.5, 0.0), delta) / sigma
    return MannWhitney(u, z, _p_from_z(z, alternative), effect)


def two_proportion_z(
    successes_1: int,
    trials_1: int,
    successes_2: int,
    trials_2: int,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> TwoProportion:
    """Pooled two-proportion z-test; `greater` asks whether rate 1 exceeds rate 2.

    A normal approximation: with a handful of trials it is anti-conservative, so the gates use
    `fisher_exact` for rates over devices.
    """
    check_proportions(((successes_1, trials_1), (successes_2, trials_2)))
    rate_1 = successes_1 / trials_1 if trials_1 else 0.0
    rate_2 = successes_2 / trials_2 if trials_2 else 0.0
    if trials_1 == 0 or trials_2 == 0:
        return TwoProportion(rate_1, rate_2, 0.0, 1.0)
    pooled = (successes_1 + successes_2) / (trials_1 + trials_2)
    variance = pooled * (1.0 - pooled) * (1.0 / trials_1 + 1.0 / trials_2)
    if variance <= 0.0:
        return TwoProportion(rate_1, rate_2, 0.0, 1.0)
    z = (rate_1 - rate_2) / math.sqrt(variance)
    return TwoProportion(rate_1, rate_2, z, _p_from_z(z, alternative))


def check_proportions(pairs: Sequence[tuple[int, int]]) -> None:
    """Raise `ValueError` unless every (successes, trials) pair is a proportion."""
    for successes, trials in pairs:
        if trials < 0 or not 0 <= successes <= trials:
            raise ValueError(f"{successes} successes out of {trials} trials is not a proportion")


def hypergeometric_log_pmf(x: int, trials_1: int, trials_2: int, successes: int) -> float:
    """ln P(X = x): x of the `successes` fall in group 1 when drawn without replacement."""
    if not max(0, successes - trials_2) <= x <= min(trials_1, successes):
        return -math.inf
    return (
        _log_comb(trials_1, x)
        + _log_comb(trials_2, successes - x)
        - _log_comb(trials_1 + trials_2, successes)
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(
    successes_1: int,
    trials_1: int,
    successes_2: int,
    trials_2: int,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> FisherExact:
    """Fisher's exact test of a 2 x 2 table, conditional on its margins (scipy's `fisher_exact`).

    `greater` asks whether rate 1 exceeds rate 2: P(X >= successes_1) under the hypergeometric
    law. Two-sided sums every table no more likely than the observed one (with scipy's relative
    tolerance of 1e-7 for ties).
    """
    check_proportions(((successes_1, trials_1), (successes_2, trials_2)))
    rate_1 = successes_1 / trials_1 if trials_1 else 0.0
    rate_2 = successes_2 / trials_2 if trials_2 else 0.0
    fails_1, fails_2 = trials_1 - successes_1, trials_2 - successes_2
    numerator, denominator = successes_1 * fails_2, fails_1 * successes_2
    odds = numerator / denominator if denominator else (1e300 if numerator else 1.0)
    if trials_1 == 0 or trials_2 == 0:
        return FisherExact(rate_1, rate_2, odds, 1.0)
    total = successes_1 + successes_2
    low, high = max(0, total - trials_2), min(trials_1, total)
    log_pmf = [hypergeometric_log_pmf(x, trials_1, trials_2, total) for x in range(low, high + 1)]
    pmf = np.exp(np.asarray(log_pmf) - max(log_pmf))
    pmf /= pmf.sum()
    at = successes_1 - low
    if alternative is Alternative.GREATER:
        p = float(pmf[at:].sum())
    elif alternative is Alternative.LESS:
        p = float(pmf[: at + 1].sum())
    else:
        p = float(pmf[pmf <= pmf[at] * (1.0 + 1e-7)].sum())
    return FisherExact(rate_1, rate_2, min(odds, 1e300), min(1.0, max(0.0, p)))


def chi2_sf(statistic: float, dof: int) -> float:
    """P(chi-square with `dof` degrees of freedom > statistic), exact for integer dof.

    Even dof: e^(-x/2) sum_{i<k/2} (x/2)^i / i!. Odd dof: erfc(sqrt(x/2)) plus
    e^(-x/2) sum_{i=1}^{(k-1)/2} (x/2)^(i-1/2) / Gamma(i+1/2). Terms are summed in log space so
    that large statistics underflow to 0 instead of overflowing.
    """
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {dof}")
    if statistic <= 0.0:
        return 1.0
    half = statistic / 2.0
    log_half = math.log(half)
    if dof % 2 == 0:
        total = sum(math.exp(-half + i * log_half - math.lgamma(i + 1)) for i in range(dof // 2))
    else:
        total = math.erfc(math.sqrt(half)) + sum(
            math.exp(-half + (i - 0.5) * log_half - math.lgamma(i + 0.5))
            for i in range(1, (dof - 1) // 2 + 1)
        )
    return min(1.0, max(0.0, total))


def chi_square_homogeneity(counts_1: Mapping[str, int], counts_2: Mapping[str, int]) -> ChiSquare:
    """Pearson's chi-square test that two cohorts share one label distribution (2 x K table).

    Labels neither cohort produced are dropped; with fewer than two labels left there is nothing
    to compare and p = 1.
    """
    labels = sorted(
        label for label in set(counts_1) | set(counts_2) if _label_total(label, counts_1, counts_2)
    )
    if any(count < 0 for count in (*counts_1.values(), *counts_2.values())):
        raise ValueError("label counts must be non-negative")
    n_1, n_2 = sum(counts_1.get(k, 0) for k in labels), sum(counts_2.get(k, 0) for k in labels)
    if len(labels) < 2 or n_1 == 0 or n_2 == 0:
        return ChiSquare(0.0, max(len(labels) - 1, 1), 1.0)
    total = n_1 + n_2
    statistic = 0.0
    for label in labels:
        observed_1, observed_2 = counts_1.get(label, 0), counts_2.get(label, 0)
        column = observed_1 + observed_2
        expected_1, expected_2 = n_1 * column / total, n_2 * column / total
        statistic += (observed_1 - expected_1) ** 2 / expected_1
        statistic += (observed_2 - expected_2) ** 2 / expected_2
    dof = len(labels) - 1
    return ChiSquare(statistic, dof, chi2_sf(statistic, dof))


def _label_total(label: str, counts_1: Mapping[str, int], counts_2: Mapping[str, int]) -> int:
    return counts_1.get(label, 0) + counts_2.get(label, 0)


def population_stability_index(
    actual: Mapping[str, int], expected: Mapping[str, int], floor: float = _PSI_FLOOR
) -> float:
    """PSI = sum (a_i - e_i) ln(a_i / e_i) over label shares, each share floored at `floor`.

    Rules of thumb: below 0.1 no real shift, 0.1 to 0.25 moderate, above 0.25 major.
    """
    n_actual, n_expected = sum(actual.values()), sum(expected.values())
    if n_actual == 0 or n_expected == 0:
        return 0.0
    psi = 0.0
    for label in set(actual) | set(expected):
        share_a = max(actual.get(label, 0) / n_actual, floor)
        share_e = max(expected.get(label, 0) / n_expected, floor)
        psi += (share_a - share_e) * math.log(share_a / share_e)
    return psi


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject hypothesis i at level alpha iff adjusted <= alpha.

    Controls the family-wise error rate at alpha under any dependence between the tests.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def histogram_quantile(counts: ArrayLike, edges: ArrayLike, q: float) -> float:
    """The q-quantile of values binned as counts[i] in [edges[i], edges[i+1]), interpolated.

    Assumes values spread evenly inside their bin, so the error is at most one bin's width.
    """
    c = _counts(counts, "counts")
    e = np.asarray(edges, dtype=np.float64)
    if e.shape[0] != c.shape[0] + 1:
        raise ValueError("a histogram needs one more edge than bins")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    total = float(c.sum())
    if total == 0:
        return 0.0
    target = q * total
    cumulative = np.cumsum(c)
    # The first bin whose running count reaches the target is never empty; q = 0 looks for the
    # first non-empty bin rather than the first bin.
    reach = max(target, min(0.5, total))
    index = min(int(np.searchsorted(cumulative, reach, side="left")), c.shape[0] - 1)
    before = float(cumulative[index] - c[index])
    fraction = min(1.0, max(0.0, (target - before) / float(c[index])))
    return float(e[index] + fraction * (e[index + 1] - e[index]))
