"""Fisher's exact test and the e-values of `service.domain.sequential`, against independent sums."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from service.domain.sequential import (
    E_CAP,
    anytime_p,
    chi2_mixture_e,
    hypergeometric_mixture_e,
    t_mixture_e,
)
from service.domain.stats import Alternative, fisher_exact, two_proportion_z


def _fisher_by_enumeration(a: int, n1: int, b: int, n2: int, side: str) -> float:
    """Exact rational hypergeometric tail sums with math.comb: an independent reference."""
    total = a + b
    probability = {
        x: Fraction(math.comb(n1, x) * math.comb(n2, total - x), math.comb(n1 + n2, total))
        for x in range(max(0, total - n2), min(n1, total) + 1)
    }
    if side == "greater":
        return float(sum(p for x, p in probability.items() if x >= a))
    if side == "less":
        return float(sum(p for x, p in probability.items() if x <= a))
    return float(sum(p for p in probability.values() if p <= probability[a]))


TABLES = [(2, 3, 0, 15), (3, 10, 1, 12), (0, 5, 4, 9), (7, 40, 2, 45), (1, 1, 0, 1), (0, 0, 3, 8)]


@pytest.mark.parametrize("side", ["greater", "less", "two-sided"])
@pytest.mark.parametrize("table", TABLES, ids=[str(t) for t in TABLES])
def test_fisher_exact_equals_the_enumerated_tail(
    table: tuple[int, int, int, int], side: str
) -> None:
    result = fisher_exact(*table, Alternative(side))
    expected = 1.0 if table[1] == 0 else _fisher_by_enumeration(*table, side)
    assert result.p_value == pytest.approx(expected, rel=1e-9)


def test_two_of_three_against_none_of_fifteen_is_not_significant_at_one_percent() -> None:
    """The review's case: the z-test claims p 0.0004; the exact p is 3/153 = 0.0196."""
    assert two_proportion_z(2, 3, 0, 15, Alternative.GREATER).p_value < 0.001
    assert fisher_exact(2, 3, 0, 15, Alternative.GREATER).p_value == pytest.approx(3 / 153)


def test_fisher_exact_refuses_what_is_not_a_proportion() -> None:
    with pytest.raises(ValueError, match="not a proportion"):
        fisher_exact(4, 3, 0, 15)


def test_an_e_value_gives_an_anytime_p_value() -> None:
    assert anytime_p(0.2) == 1.0 and anytime_p(200.0) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="non-negative"):
        anytime_p(float("nan"))


def test_the_t_mixture_is_the_bayes_factor_of_goenen_et_al() -> None:
    # BF = (1 + n g)^-1/2 ((1 + t^2/v) / (1 + t^2/(v (1 + n g))))^((v+1)/2), written out.
    t, v, n, g = 3.1, 16.0, 2.5, 1.0
    expected = (1 + n * g) ** -0.5 * ((1 + t * t / v) / (1 + t * t / (v * (1 + n * g)))) ** (
        (v + 1) / 2
    )
    assert t_mixture_e(t, v, n, g) == pytest.approx(expected)
    assert t_mixture_e(0.0, v, n, g) < 1.0 < t_mixture_e(4.0, v, n, g) < t_mixture_e(5.0, v, n, g)
    assert t_mixture_e(1e200, 3.0, 3.0, 1.0) == pytest.approx(4.0**1.5)  # the bound
    assert t_mixture_e(2.0, 3.0, 0.0, 1.0) == 1.0


def test_the_chi_square_mixture_grows_with_the_statistic() -> None:
    low, high = chi2_mixture_e(2.0, 3, 10.0, 1.0), chi2_mixture_e(30.0, 3, 10.0, 1.0)
    assert low < 1.0 < high and chi2_mixture_e(1e9, 1, 1e9, 1.0) == E_CAP
    assert chi2_mixture_e(5.0, 2, 0.0, 1.0) == 1.0


def test_the_hypergeometric_mixture_is_an_exact_e_value_given_the_margins() -> None:
    """E_1[E] = 1 over the central hypergeometric law of every table with these margins."""
    for n1, n2, total in ((3, 15, 2), (10, 12, 5), (30, 30, 11)):
        mean = sum(
            math.comb(n1, x)
            * math.comb(n2, total - x)
            / math.comb(n1 + n2, total)
            * hypergeometric_mixture_e(x, n1, total - x, n2)
            for x in range(max(0, total - n2), min(n1, total) + 1)
        )
        assert mean == pytest.approx(1.0)
    assert hypergeometric_mixture_e(0, 3, 0, 15) == 1.0
    assert hypergeometric_mixture_e(3, 3, 0, 15) > hypergeometric_mixture_e(2, 3, 1, 15)
    # Two of three devices against none of fifteen is weak evidence, as Fisher says.
    assert 1.0 < hypergeometric_mixture_e(2, 3, 0, 15) < 100.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: t_mixture_e(1.0, 0.5, 2.0, 1.0), "degrees of freedom"),
        (lambda: t_mixture_e(1.0, 3.0, 2.0, 0.0), "prior variance"),
        (lambda: chi2_mixture_e(1.0, 0, 2.0, 1.0), "degrees of freedom"),
        (lambda: hypergeometric_mixture_e(-1, 3, 0, 3), "not a proportion"),
    ],
    ids=["dof", "prior", "chi2-dof", "negative"],
)
def test_bad_arguments_raise(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
