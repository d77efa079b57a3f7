"""The gate statistics against reference values (scipy 1.17.1, computed once and written here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.stats import (
    Alternative,
    chi2_sf,
    chi_square_homogeneity,
    histogram_quantile,
    holm_adjust,
    mann_whitney_binned,
    normal_sf,
    population_stability_index,
    two_proportion_z,
)

SMALL_X = [1, 2, 3, 4, 5, 5, 6]
SMALL_Y = [3, 4, 5, 7, 8, 8, 9, 10]
# Two samples of integers 0..20 (numpy default_rng(7)), given as counts per value.
BIG_X = [14, 15, 12, 14, 16, 8, 12, 15, 20, 13, 19, 19, 14, 11, 13, 11, 19, 16, 15, 24, 0]
BIG_Y = [0, 10, 11, 15, 17, 12, 11, 18, 10, 6, 13, 5, 14, 14, 17, 12, 13, 18, 16, 13, 5]


def _counts(values: list[int], bins: int) -> np.ndarray:
    return np.bincount(values, minlength=bins)


# scipy.stats.mannwhitneyu(x, y, alternative=..., method="asymptotic", use_continuity=True)
@pytest.mark.parametrize(
    ("x", "y", "alternative", "u", "p"),
    [
        (_counts(SMALL_X, 11), _counts(SMALL_Y, 11), "two-sided", 10.0, 0.0415490247538399),
        (_counts(SMALL_X, 11), _counts(SMALL_Y, 11), "greater", 10.0, 0.9843982063047443),
        (_counts(SMALL_X, 11), _counts(SMALL_Y, 11), "less", 10.0, 0.02077451237691995),
        (BIG_X, BIG_Y, "two-sided", 35605.0, 0.3066425574745839),
        (BIG_X, BIG_Y, "greater", 35605.0, 0.8468063457963271),
        (BIG_X, BIG_Y, "less", 35605.0, 0.15332127873729195),
    ],
    ids=[
        "small-two-sided",
        "small-greater",
        "small-less",
        "big-two-sided",
        "big-greater",
        "big-less",
    ],
)
def test_mann_whitney_matches_scipy(
    x: object, y: object, alternative: str, u: float, p: float
) -> None:
    result = mann_whitney_binned(x, y, Alternative(alternative))  # type: ignore[arg-type]
    assert result.u == pytest.approx(u, abs=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize(
    ("statistic", "dof", "p"),
    [
        (3.841458820694124, 1, 0.04999999999999989),
        (11.0704976935164, 5, 0.04999999999999909),
        (0.5, 2, 0.7788007830714049),
        (20.0, 7, 0.005569683072945574),
        (100.0, 30, 1.8568023365102314e-09),
        (7.2, 4, 0.12568912325754575),
        (1e-3, 3, 0.9999915920809419),
        (2500.0, 40, 0.0),
    ],
)
def test_chi2_sf_matches_scipy(statistic: float, dof: int, p: float) -> None:
    assert chi2_sf(statistic, dof) == pytest.approx(p, rel=1e-9, abs=1e-300)


def test_chi_square_homogeneity_matches_scipy_contingency() -> None:
    # scipy.stats.chi2_contingency([[30, 50, 20], [45, 40, 15]], correction=False)
    result = chi_square_homogeneity({"a": 30, "b": 50, "c": 20}, {"a": 45, "b": 40, "c": 15})
    assert result.statistic == pytest.approx(4.825396825396825, rel=1e-12)
    assert result.dof == 2
    assert result.p_value == pytest.approx(0.08957326253887996, rel=1e-9)


def test_chi_square_with_nothing_to_compare_has_no_evidence() -> None:
    assert chi_square_homogeneity({"a": 10}, {"a": 30}).p_value == 1.0
    assert chi_square_homogeneity({}, {"a": 3, "b": 4}).p_value == 1.0


def test_two_proportion_z_matches_hand_computation() -> None:
    # 45/100 against 30/100: pooled 0.375, z = 0.15 / sqrt(0.375 * 0.625 * 0.02)
    two_sided = two_proportion_z(45, 100, 30, 100)
    assert two_sided.z == pytest.approx(2.1908902300206647, rel=1e-12)
    assert two_sided.p_value == pytest.approx(0.02845973691631055, rel=1e-9)
    assert two_proportion_z(45, 100, 30, 100, Alternative.GREATER).p_value == pytest.approx(
        0.014229868458155276, rel=1e-9
    )
    assert two_proportion_z(45, 100, 30, 100, Alternative.LESS).p_value > 0.98


@pytest.mark.parametrize(
    "args",
    [(0, 0, 0, 10), (0, 10, 0, 10), (10, 10, 5, 5), (3, 0, 1, 2)],
    ids=["empty-cohort", "no-successes", "all-successes", "more-successes-than-trials"],
)
def test_two_proportion_degenerate_cases(args: tuple[int, int, int, int]) -> None:
    if args[0] > args[1]:
        with pytest.raises(ValueError, match="not a proportion"):
            two_proportion_z(*args)
    else:
        assert two_proportion_z(*args).p_value == 1.0


def test_normal_sf_reference_points() -> None:
    assert normal_sf(1.959963984540054) == pytest.approx(0.025, rel=1e-12)
    assert normal_sf(-3.0) == pytest.approx(0.9986501019683699, rel=1e-12)
    assert normal_sf(8.0) == pytest.approx(6.22096057427174e-16, rel=1e-9)


def test_psi_hand_computed() -> None:
    # shares 0.5/0.3/0.2 against 0.4/0.4/0.2: 0.1 ln(1.25) + (-0.1) ln(0.75) + 0
    expected = 0.1 * math.log(1.25) - 0.1 * math.log(0.75)
    psi = population_stability_index({"a": 50, "b": 30, "c": 20}, {"a": 40, "b": 40, "c": 20})
    assert psi == pytest.approx(expected, rel=1e-12)
    assert population_stability_index({"a": 5}, {"a": 9}) == 0.0


def test_psi_of_a_label_one_cohort_never_produced_is_finite() -> None:
    psi = population_stability_index({"a": 90, "new": 10}, {"a": 100})
    assert 0.5 < psi < 1.0  # 0.1 ln(0.1 / 1e-4) plus the shrink of "a"


def test_holm_adjusted_values() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 * 0.005, 3 * 0.01, 2 * 0.03, max(1 * 0.04, 0.06)
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]
    assert holm_adjust([]) == []


def test_histogram_quantile_interpolates_inside_the_bin() -> None:
    counts, edges = [0, 10, 10, 0], [0, 10, 20, 30, 40]
    assert histogram_quantile(counts, edges, 0.5) == pytest.approx(20.0)
    assert histogram_quantile(counts, edges, 0.25) == pytest.approx(15.0)
    assert histogram_quantile(counts, edges, 0.0) == pytest.approx(10.0)
    assert histogram_quantile(counts, edges, 1.0) == pytest.approx(30.0)
    assert histogram_quantile([0, 0], [0, 1, 2], 0.5) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mann_whitney_binned([1, 2], [1, 2, 3]), "bins differ"),
        (lambda: mann_whitney_binned([1, -2], [1, 2]), "non-negative"),
        (lambda: chi2_sf(3.0, 0), "at least 1"),
        (lambda: histogram_quantile([1], [0, 1], 1.5), "outside"),
        (lambda: histogram_quantile([1, 2], [0, 1], 0.5), "one more edge"),
    ],
    ids=["mismatched-bins", "negative-count", "zero-dof", "quantile-above-one", "short-edges"],
)
def test_invalid_arguments_raise_value_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


samples = st.lists(st.integers(0, 12), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(samples, samples)
def test_mann_whitney_u_counts_pairs_and_is_antisymmetric(x: list[int], y: list[int]) -> None:
    forward = mann_whitney_binned(_counts(x, 13), _counts(y, 13))
    backward = mann_whitney_binned(_counts(y, 13), _counts(x, 13))
    pairs = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    assert forward.u == pytest.approx(pairs)
    assert forward.u + backward.u == pytest.approx(len(x) * len(y))
    assert forward.p_value == pytest.approx(backward.p_value)
    assert 0.0 <= forward.p_value <= 1.0
    greater = mann_whitney_binned(_counts(x, 13), _counts(y, 13), Alternative.GREATER)
    less = mann_whitney_binned(_counts(y, 13), _counts(x, 13), Alternative.LESS)
    assert greater.p_value == pytest.approx(less.p_value)


@settings(max_examples=100, deadline=None)
@given(samples, samples, st.integers(1, 6))
def test_merging_bins_keeps_u_within_the_ties(x: list[int], y: list[int], width: int) -> None:
    """Coarser bins only turn pairs into ties: U moves by at most half the newly tied pairs."""
    fine = mann_whitney_binned(_counts(x, 13), _counts(y, 13))
    coarse_x, coarse_y = [v // width for v in x], [v // width for v in y]
    coarse = mann_whitney_binned(_counts(coarse_x, 13), _counts(coarse_y, 13))
    newly_tied = sum(a != b and a // width == b // width for a in x for b in y)
    assert abs(fine.u - coarse.u) <= 0.5 * newly_tied + 1e-9
