"""Always-valid evidence for gates that are looked at again and again: e-values from cumulative
data.

A gate is evaluated on every engine tick over the data gathered so far, and acts on the first
FAIL. A test at level alpha per look then fails an equal model far more often than alpha over a
run. An e-process E_t (a non-negative process with E[E_tau] <= 1 under the null at every stopping
time tau) has no such problem: by Ville's inequality P(there is a t with E_t >= 1/alpha) <= alpha.
So `anytime_p(E_t) = min(1, 1/E_t)` is a p-value that stays valid at every look, however many
there are and whenever they happen, and the gate needs no state: each look recomputes E_t from
the cumulative counts it is given.

The e-values here are mixture likelihood ratios (Bayes factors) whose nuisance parameters are
handled so that the ratio stays an e-process under the whole null:
- `t_mixture_e`: the two-sample t-test's Bayes factor with a normal prior N(0, prior_var) on the
  standardised effect and the right-Haar (Jeffreys) prior on location and scale (Gönen, Johnson,
  Lu and Westfall 2005). Because it depends on the data only through t, it is a likelihood ratio
  for the maximal invariant and hence a test martingale under every null (mu, sigma) (Pérez-Ortiz,
  Lardy, de Heide and Grünwald 2024, "E-statistics, group invariance and anytime-valid testing").
- `chi2_mixture_e`: the mixture-SPRT (Robbins; Johari et al. 2017) for a k-dimensional
  asymptotically normal statistic whose squared norm is X^2, prior N(0, prior_var I) on the
  effect per unit of information; valid asymptotically.
- `hypergeometric_mixture_e`: the conditional likelihood ratio of Fisher's noncentral
  hypergeometric law (odds ratio psi) against the central one, averaged over a fixed grid of
  psi >= 1 (one-sided). Given the table's margins it is an exact e-value at every look: the
  counterpart of Fisher's exact test.

Invariants:
- Pure: no I/O, no clock, no randomness; the same numbers give the same e-value.
- Every e-value is finite and >= 0 (overflow is capped at `E_CAP`, which is far beyond any 1/alpha),
  never NaN; no information (a cohort too small) gives exactly 1, i.e. p = 1.
- Each e-value is non-decreasing in the evidence against the null: in |t| for fixed n, in X^2, in
  the first group's successes for fixed margins.
- Bad arguments (negative counts, dof < 1, prior_var <= 0) raise `ValueError`.
"""

from __future__ import annotations

import math

from service.domain.stats import check_proportions, hypergeometric_log_pmf

__all__ = [
    "E_CAP",
    "anytime_p",
    "chi2_mixture_e",
    "hypergeometric_mixture_e",
    "t_mixture_e",
]

E_CAP = 1e300
_LOG_CAP = math.log(E_CAP)
# Odds ratios the one-sided device-rate mixture averages over, with equal weight: from a mild
# (x1.5) to an overwhelming (x1000) excess; psi = 1 itself would only dilute the evidence.
_LOG_ODDS_GRID = tuple(math.log(psi) for psi in (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0))


def _capped_exp(log_value: float) -> float:
    return E_CAP if log_value >= _LOG_CAP else math.exp(log_value)


def anytime_p(e_value: float) -> float:
    """The anytime-valid p-value of an e-process: min(1, 1/E)."""
    if not e_value >= 0.0:
        raise ValueError(f"an e-value is non-negative, not {e_value!r}")
    return 1.0 if e_value <= 1.0 else 1.0 / e_value


def t_mixture_e(t: float, dof: float, n_eff: float, prior_var: float) -> float:
    """Two-sided Bayes factor of a two-sample t statistic (n_eff = n1 n2 / (n1 + n2)).

    BF = (1 + n g)^(-1/2) * ((1 + t^2/v) / (1 + t^2 / (v (1 + n g))))^((v + 1) / 2)
    with g the prior variance of the standardised effect and v the degrees of freedom. It is
    bounded by (1 + n g)^(v/2): a handful of devices can never give strong evidence.
    """
    if dof < 1 or not math.isfinite(dof):
        raise ValueError(f"degrees of freedom must be at least 1, not {dof}")
    if not prior_var > 0.0:
        raise ValueError(f"prior variance must be positive, not {prior_var}")
    if not n_eff > 0.0 or not math.isfinite(t):
        return 1.0
    spread = 1.0 + n_eff * prior_var
    u = t * t / dof if abs(t) < 1e150 else math.inf
    # As |t| grows the ratio tends to `spread`: the factor is bounded by spread^(v/2).
    ratio = math.log(spread) if u > 1e300 else math.log1p(u) - math.log1p(u / spread)
    return _capped_exp(-0.5 * math.log(spread) + (dof + 1.0) / 2.0 * ratio)


def chi2_mixture_e(statistic: float, dof: int, n_eff: float, prior_var: float) -> float:
    """Mixture-SPRT of an asymptotically chi-square(dof) statistic with n_eff units of information:
    (1 + n g)^(-k/2) exp(X^2 n g / (2 (1 + n g)))."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {dof}")
    if not prior_var > 0.0:
        raise ValueError(f"prior variance must be positive, not {prior_var}")
    if not n_eff > 0.0 or not math.isfinite(statistic):
        return 1.0
    ng = n_eff * prior_var
    return _capped_exp(-0.5 * dof * math.log1p(ng) + max(statistic, 0.0) * ng / (2.0 * (1.0 + ng)))


def hypergeometric_mixture_e(
    successes_1: int, trials_1: int, successes_2: int, trials_2: int
) -> float:
    """One-sided (group 1's rate higher) conditional mixture likelihood ratio of a 2 x 2 table.

    E = mean over psi in the grid of P_psi(X = x | margins) / P_1(X = x | margins), with X
    Fisher's noncentral hypergeometric count of successes in group 1.
    """
    check_proportions(((successes_1, trials_1), (successes_2, trials_2)))
    total = successes_1 + successes_2
    low, high = max(0, total - trials_2), min(trials_1, total)
    if trials_1 == 0 or trials_2 == 0 or low == high:
        return 1.0  # the margins fix the table: no evidence either way
    log_central = [
        hypergeometric_log_pmf(x, trials_1, trials_2, total) for x in range(low, high + 1)
    ]
    ratios = []
    for log_psi in _LOG_ODDS_GRID:
        # ln P_psi(x) - ln P_1(x) = x ln psi - ln E_1[psi^X]
        shifted = [lp + (low + i) * log_psi for i, lp in enumerate(log_central)]
        peak = max(shifted)
        log_norm = peak + math.log(sum(math.exp(s - peak) for s in shifted))
        ratios.append(successes_1 * log_psi - log_norm)
    peak = max(ratios)
    return _capped_exp(peak + math.log(sum(math.exp(r - peak) for r in ratios) / len(ratios)))
