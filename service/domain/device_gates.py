"""The health gate over per-device rollups: device-level, exact and always-valid tests.

`evaluate_devices(policy, canary, control, *, directions)` takes, per cohort, each device's own
rollup over the window (device id -> the rollup of that device's rows) and returns the same
`GateVerdict` as `evaluate_gate`, with the same PASS/FAIL/WAIT rules, limits and Holm step-down.
What changes is the evidence (ADR 0010):

- **The device is the unit.** Rows of one device share its hardware, placement and input, so
  they are not independent; with 3 canary devices the pooled row tests FAIL equal models far more
  often than alpha. Here each device that reported the metric gives one value (its mean log
  latency, its mean score, its anomaly rate) and the two cohorts' device values are compared by
  a two-sample t statistic (pooled variance, n1 + n2 - 2 degrees of freedom).
- **Against the limit, not against zero.** The t statistic tests whether the canary is worse by
  more than the policy's limit (log(1 + limit) for the latency, the limit itself for the score
  and the anomaly rate), so a real difference just inside the limit does not FAIL however long
  the gate keeps looking.
- **Always valid.** Each p-value is `anytime_p` of an e-value computed from the cumulative data
  (`service.domain.sequential`): the t mixture for the device values, the chi-square mixture for
  the labels, the conditional hypergeometric mixture (the e-value counterpart of Fisher's exact
  test) for the device rates. By Ville's inequality an equal model's metric reaches p <= a at
  any look with probability at most a, so the gate needs no record of earlier looks.
- **Labels per device.** Each device contributes its label shares (summing to 1), so a chatty
  device weighs as much as a quiet one; the chi-square of the summed shares is conservative,
  since one device's shares vary no more than a single categorical draw.

The pooled cohorts (the merge of the devices' rollups) still give the numbers shown and checked
against the limits (p95, mean score, rates, PSI) and the sample minimums, exactly as in
`evaluate_gate`.

Invariants:
- Pure: no I/O, no clock, no randomness; the same maps give the same verdict, whatever the
  order of their keys.
- Family-wise error over all looks: an equal model FAILs some metric at some look with
  probability at most alpha (Holm over anytime-valid p-values: a false rejection needs some true
  null's p <= alpha / m0 at some look, and each has probability at most alpha / m0). The t and
  chi-square mixtures rest on normal approximations of device values; the simulation in
  `tests/bench/gates/` measures the rate with clustered, sparse devices.
- A device id in both cohorts, or a rollup holding another device's rows, is refused with
  `GateError`; every number in the verdict is finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.domain.directions import Direction, score_direction
from service.domain.gate_model import (
    DEVICE_METRICS,
    GateError,
    GatePolicy,
    GateVerdict,
    Metric,
    resolve_directions,
)
from service.domain.gates import Measure, build_verdict, device_counts, pooled_measure
from service.domain.rollups import LATENCY_EDGES_US, CohortRollup, merge_all
from service.domain.sequential import (
    anytime_p,
    chi2_mixture_e,
    hypergeometric_mixture_e,
    t_mixture_e,
)
from service.domain.stats import chi2_sf

__all__ = ["PRIOR_VARIANCE", "directions_for_model", "evaluate_devices"]

# The mixtures' prior variance of the effect per unit of information (a standardised effect of
# about one device standard deviation): the e-value is largest for effects of that size.
PRIOR_VARIANCE = 4.0
_LOG_LATENCY_MID: NDArray[np.float64] = np.log(
    np.maximum((LATENCY_EDGES_US[:-1] + LATENCY_EDGES_US[1:]) / 2.0, 0.5)
)

Cohort = Mapping[str, CohortRollup]


@dataclass(frozen=True)
class _Side:
    devices: Cohort
    pooled: CohortRollup


_DeviceTest = Callable[[Measure, _Side, _Side, Direction, float], Measure]


def directions_for_model(metadata: Mapping[str, Any]) -> dict[Metric, Direction]:
    """The directions to pass for the model that `metadata` describes (its score's side)."""
    return {Metric.CONFIDENCE_MEAN: score_direction(metadata)}


def evaluate_devices(
    policy: GatePolicy,
    canary: Mapping[str, CohortRollup],
    control: Mapping[str, CohortRollup],
    *,
    directions: Mapping[Metric, Direction] | None = None,
) -> GateVerdict:
    """Judge per-device rollups (device id -> that device's rollup over the window)."""
    _check(canary, "canary")
    _check(control, "control")
    both = sorted(set(canary) & set(control))
    if both:
        raise GateError(f"devices in both cohorts: {both[:5]}")
    sides = resolve_directions(directions)
    new, old = _Side(canary, _pooled(canary)), _Side(control, _pooled(control))
    measures: dict[Metric, Measure] = {}
    for metric, limit in policy.limits().items():
        direction = sides.get(metric, Direction.LOWER_IS_BETTER)
        pooled = pooled_measure(metric, new.pooled, old.pooled, direction)
        measures[metric] = _DEVICE_TESTS[metric](pooled, new, old, direction, limit)
    return build_verdict(policy, measures, new.pooled, old.pooled, "Holm, anytime")


def _check(cohort: Cohort, name: str) -> None:
    for device, rollup in cohort.items():
        if not isinstance(device, str) or not isinstance(rollup, CohortRollup):
            raise GateError(f"{name} must map device ids to rollups, not {device!r}")
        if not rollup.devices <= {device}:
            raise GateError(f"{name} device {device!r} holds rows of {sorted(rollup.devices)[:3]}")


def _pooled(cohort: Cohort) -> CohortRollup:
    merged = merge_all(cohort[device] for device in sorted(cohort))
    # A device in the map counts as seen even if its rollup is empty.
    return replace(merged, devices=merged.devices | frozenset(cohort))


def _device_values(cohort: Cohort, value: Callable[[CohortRollup], float | None]) -> list[float]:
    values = (value(cohort[device]) for device in sorted(cohort))
    return [v for v in values if v is not None]


def _log_latency(rollup: CohortRollup) -> float | None:
    if not rollup.inferences:
        return None
    return float(rollup.latency_counts @ _LOG_LATENCY_MID) / rollup.inferences


def _score(rollup: CohortRollup) -> float | None:
    return rollup.score_mean if rollup.inferences else None


def _anomaly(rollup: CohortRollup) -> float | None:
    return rollup.anomaly_rate if rollup.anomaly_reported else None


def _t_test(
    canary: list[float], control: list[float], direction: Direction, margin: float
) -> tuple[float, float]:
    """(t, anytime p) that the canary's device values are worse by more than `margin`."""
    n_1, n_2 = len(canary), len(control)
    dof = n_1 + n_2 - 2
    if n_1 == 0 or n_2 == 0 or dof < 1:
        return 0.0, 1.0
    x, y = np.asarray(canary), np.asarray(control)
    sign = 1.0 if direction is Direction.LOWER_IS_BETTER else -1.0
    excess = sign * (float(x.mean()) - float(y.mean())) - margin
    pooled_var = (float(((x - x.mean()) ** 2).sum()) + float(((y - y.mean()) ** 2).sum())) / dof
    standard_error = math.sqrt(pooled_var * (1.0 / n_1 + 1.0 / n_2))
    if standard_error <= 0.0:
        return 0.0, 1.0  # identical device values: nothing to scale the difference by
    t = excess / standard_error
    if t <= 0.0:
        return t, 1.0
    return t, anytime_p(t_mixture_e(t, dof, n_1 * n_2 / (n_1 + n_2), PRIOR_VARIANCE))


def _value_test(
    value: Callable[[CohortRollup], float | None], margin: Callable[[float], float]
) -> _DeviceTest:
    def test(
        pooled: Measure, canary: _Side, control: _Side, direction: Direction, limit: float
    ) -> Measure:
        values = _device_values(canary.devices, value), _device_values(control.devices, value)
        t, p = _t_test(*values, direction, margin(limit))
        return replace(pooled, test="device-t-mixture", statistic=t, p_value=p)

    return test


def _labels(
    pooled: Measure, canary: _Side, control: _Side, direction: Direction, limit: float
) -> Measure:
    shares_1, shares_2 = _label_shares(canary.devices), _label_shares(control.devices)
    labels = sorted(set(shares_1) | set(shares_2))
    n_1, n_2 = sum(shares_1.values()), sum(shares_2.values())
    if len(labels) < 2 or n_1 == 0 or n_2 == 0:
        return replace(pooled, test="device-chi-square-mixture", statistic=0.0, p_value=1.0)
    total = n_1 + n_2
    statistic = 0.0
    for label in labels:
        column = shares_1.get(label, 0.0) + shares_2.get(label, 0.0)
        for observed, n in ((shares_1.get(label, 0.0), n_1), (shares_2.get(label, 0.0), n_2)):
            expected = n * column / total
            statistic += (observed - expected) ** 2 / expected
    dof = len(labels) - 1
    e = chi2_mixture_e(statistic, dof, n_1 * n_2 / total, PRIOR_VARIANCE)
    # Never more significant than the fixed-look test on the same shares.
    p = max(anytime_p(e), chi2_sf(statistic, dof))
    return replace(pooled, test="device-chi-square-mixture", statistic=statistic, p_value=p)


def _label_shares(cohort: Cohort) -> dict[str, float]:
    shares: dict[str, float] = {}
    for device in sorted(cohort):
        counts = cohort[device].labels
        total = sum(count for _, count in counts)
        for label, count in counts:
            shares[label] = shares.get(label, 0.0) + count / total
    return shares


def _device_rate(metric: Metric) -> _DeviceTest:
    def test(
        pooled: Measure, canary: _Side, control: _Side, direction: Direction, limit: float
    ) -> Measure:
        (a, n_1), (b, n_2) = (
            device_counts(metric, canary.pooled),
            device_counts(metric, control.pooled),
        )
        if direction is Direction.LOWER_IS_BETTER:
            e = hypergeometric_mixture_e(a, n_1, b, n_2)
        else:
            e = hypergeometric_mixture_e(n_1 - a, n_1, n_2 - b, n_2)
        return replace(pooled, test="fisher-mixture", p_value=anytime_p(e))

    return test


_DEVICE_TESTS: dict[Metric, _DeviceTest] = {
    Metric.LATENCY_P95: _value_test(_log_latency, math.log1p),
    Metric.CONFIDENCE_MEAN: _value_test(_score, lambda limit: limit),
    Metric.ANOMALY_RATE: _value_test(_anomaly, lambda limit: limit),
    Metric.LABEL_SHIFT: _labels,
    **{metric: _device_rate(metric) for metric in DEVICE_METRICS},
}
