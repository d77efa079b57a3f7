"""Model-aware health gates: does the canary cohort's telemetry show the new model is worse?

`evaluate_gate(policy, canary, control)` compares the rollup of the devices running the new model
with the rollup of the same group's devices still on the old one (same time window) and returns a
`GateVerdict`: PASS, FAIL (with the policy's action and, per metric, the effect, the limit, the
test statistic and the p-value) or WAIT (what evidence is missing).

Metrics, each judged one-sided ("is the canary worse?") except the label shift; which side is
worse is the metric's `Direction` (`DEFAULT_DIRECTIONS` unless the caller passes the model's:
an anomaly model's score is an error, so lower is better, see `service.domain.directions`):
- latency-p95: relative p95 increase; Mann-Whitney U on the latency histograms (canary greater);
- confidence-mean: absolute drop of the mean score; Mann-Whitney U on the score histograms (less);
- anomaly-rate: absolute increase; two-proportion z-test over rows that report the flag;
- label-shift: population stability index; Pearson chi-square test of homogeneity;
- error-rate, revert-rate, crash-rate: absolute increase of the share of devices that reported
  one; Fisher's exact test over devices (exact however few they are).

`evaluate_gate` treats the rows as independent and holds alpha for one look: it is the pooled,
single-look fallback. `service.domain.device_gates.evaluate_devices` judges per-device rollups
with device-level, always-valid tests and gives a verdict of the same shape.

Invariants:
- Pure: no I/O, no clock; the same policy and rollups always give the same verdict.
- A metric FAILs only if its Holm-adjusted p-value is at most alpha AND its effect exceeds the
  policy's limit: a large fleet does not fail on a negligible shift, a small one not on noise.
  Holm's step-down over the applicable metrics keeps the chance that an equal model FAILs any
  metric at or below alpha per evaluation (whatever the dependence between the metrics).
- An effect beyond the limit that is not yet significant is WAIT, never PASS; PASS needs every
  enabled metric to have its minimum sample and to stay within its limit or show no evidence.
- Any FAIL makes the verdict FAIL; otherwise any WAIT makes it WAIT. A FAIL verdict carries
  the policy's action; PASS and WAIT carry none.
- `GatePolicy` refuses values outside its hard limits when built; a verdict round-trips through
  `to_dict`/`from_dict` with finite numbers only (JSON without NaN). The policy, the verdict and
  the metric names live in `service.domain.gate_model` and are re-exported here.
- `build_verdict` is the one place that applies Holm, the limits and the sample minimums; both
  entry points judge through it, so their verdicts mean the same thing.

Exceptions (under the domain's root, `service.domain.errors.DomainError`; both are also
ValueErrors, since both mean bad input):
    DomainError
     ├── GateError              a stored verdict or policy document that cannot be read, or
     │                              per-device maps that do not fit (gate_model, device_gates)
     │    └── GatePolicyError   a policy outside its hard limits: the operator fixes the policy
     └── RollupError            rows or a stored rollup that do not fit the schema: the ingest
                                    dead-letters them (rollups)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from service.domain.directions import Direction
from service.domain.gate_model import (
    DEFAULT_DIRECTIONS,
    DEVICE_METRICS,
    FailAction,
    GateError,
    GatePolicy,
    GatePolicyError,
    GateVerdict,
    Metric,
    MetricResult,
    MetricStatus,
    Outcome,
    resolve_directions,
    worse_side,
)
from service.domain.rollups import CohortRollup
from service.domain.stats import (
    chi_square_homogeneity,
    fisher_exact,
    holm_adjust,
    mann_whitney_binned,
    population_stability_index,
    two_proportion_z,
)

__all__ = [
    "DEFAULT_DIRECTIONS",
    "Direction",
    "FailAction",
    "GateError",
    "GatePolicy",
    "GatePolicyError",
    "GateVerdict",
    "Metric",
    "MetricResult",
    "MetricStatus",
    "Outcome",
    "evaluate_gate",
]


@dataclass(frozen=True)
class Measure:
    """One metric's numbers before Holm: what `build_verdict` judges."""

    test: str
    canary: float
    control: float
    effect: float
    statistic: float
    p_value: float
    applicable: bool = True


def _latency(canary: CohortRollup, control: CohortRollup, direction: Direction) -> Measure:
    p95_canary, p95_control = canary.latency_quantile_us(0.95), control.latency_quantile_us(0.95)
    side = worse_side(direction)
    test = mann_whitney_binned(canary.latency_counts, control.latency_counts, side)
    return Measure(
        "mann-whitney-u",
        p95_canary,
        p95_control,
        relative_worsening(p95_canary, p95_control, direction),
        test.z,
        test.p_value,
    )


def relative_worsening(canary: float, control: float, direction: Direction) -> float:
    """How much worse the canary's value is, relative to the better of the two (0 if better)."""
    if direction is Direction.LOWER_IS_BETTER:
        return canary / max(control, 1.0) - 1.0
    return control / max(canary, 1.0) - 1.0


def worsening(canary: float, control: float, direction: Direction) -> float:
    """How much worse the canary's value is, in the value's units (negative if better)."""
    return canary - control if direction is Direction.LOWER_IS_BETTER else control - canary


def _confidence(canary: CohortRollup, control: CohortRollup, direction: Direction) -> Measure:
    test = mann_whitney_binned(canary.score_counts, control.score_counts, worse_side(direction))
    effect = worsening(canary.score_mean, control.score_mean, direction)
    return Measure(
        "mann-whitney-u", canary.score_mean, control.score_mean, effect, test.z, test.p_value
    )


def _anomaly(canary: CohortRollup, control: CohortRollup, direction: Direction) -> Measure:
    test = two_proportion_z(
        canary.anomalies,
        canary.anomaly_reported,
        control.anomalies,
        control.anomaly_reported,
        worse_side(direction),
    )
    return Measure(
        "two-proportion-z",
        test.rate_1,
        test.rate_2,
        worsening(test.rate_1, test.rate_2, direction),
        test.z,
        test.p_value,
        canary.anomaly_reported > 0 and control.anomaly_reported > 0,
    )


def label_measure(canary: CohortRollup, control: CohortRollup, direction: Direction) -> Measure:
    counts_canary, counts_control = canary.label_counts, control.label_counts
    test = chi_square_homogeneity(counts_canary, counts_control)
    psi = population_stability_index(counts_canary, counts_control)
    applicable = bool(counts_canary) and bool(counts_control)
    # PSI is symmetric and has no per-cohort value; report the labels each cohort produced.
    return Measure(
        "chi-square",
        float(len(counts_canary)),
        float(len(counts_control)),
        psi,
        test.statistic,
        test.p_value,
        applicable,
    )


DEVICE_SETS: Mapping[Metric, str] = {
    Metric.ERROR_RATE: "devices_with_error",
    Metric.REVERT_RATE: "devices_reverted",
    Metric.CRASH_RATE: "devices_crashed",
}


def device_counts(metric: Metric, cohort: CohortRollup) -> tuple[int, int]:
    """(devices that reported the metric's event, devices seen) of a cohort."""
    flagged = getattr(cohort, DEVICE_SETS[metric])
    return len(flagged), len(cohort.devices | flagged)


def _device_rate(metric: Metric) -> Callable[[CohortRollup, CohortRollup, Direction], Measure]:
    def measure(canary: CohortRollup, control: CohortRollup, direction: Direction) -> Measure:
        (a, n_1), (b, n_2) = device_counts(metric, canary), device_counts(metric, control)
        test = fisher_exact(a, n_1, b, n_2, worse_side(direction))
        effect = worsening(test.rate_1, test.rate_2, direction)
        return Measure(
            "fisher-exact", test.rate_1, test.rate_2, effect, test.odds_ratio, test.p_value
        )

    return measure


_MEASURES: dict[Metric, Callable[[CohortRollup, CohortRollup, Direction], Measure]] = {
    Metric.LATENCY_P95: _latency,
    Metric.CONFIDENCE_MEAN: _confidence,
    Metric.ANOMALY_RATE: _anomaly,
    Metric.LABEL_SHIFT: label_measure,
    **{metric: _device_rate(metric) for metric in DEVICE_METRICS},
}


def pooled_measure(
    metric: Metric, canary: CohortRollup, control: CohortRollup, direction: Direction
) -> Measure:
    """`evaluate_gate`'s numbers for one metric of two pooled cohorts."""
    return _MEASURES[metric](canary, control, direction)


def shortfalls(policy: GatePolicy, canary: CohortRollup, control: CohortRollup) -> dict[str, str]:
    """'inferences' / 'devices' -> what is missing, for each kind of sample that is short."""
    short: dict[str, list[str]] = {"inferences": [], "devices": []}
    for name, cohort in (("canary", canary), ("control", control)):
        if cohort.inferences < policy.min_inferences:
            short["inferences"].append(
                f"{name}: {cohort.inferences} of {policy.min_inferences} inferences"
            )
        if len(cohort.devices) < policy.min_devices:
            short["devices"].append(
                f"{name}: {len(cohort.devices)} of {policy.min_devices} devices"
            )
    return {kind: "; ".join(lines) for kind, lines in short.items() if lines}


def evaluate_gate(
    policy: GatePolicy,
    canary: CohortRollup,
    control: CohortRollup,
    *,
    directions: Mapping[Metric, Direction] | None = None,
) -> GateVerdict:
    """The pooled, single-look gate: rows as independent samples (see the module docstring)."""
    sides = resolve_directions(directions)
    measures = {
        metric: pooled_measure(
            metric, canary, control, sides.get(metric, Direction.LOWER_IS_BETTER)
        )
        for metric in policy.limits()
    }
    return build_verdict(policy, measures, canary, control, "Holm")


def build_verdict(
    policy: GatePolicy,
    measures: Mapping[Metric, Measure],
    canary: CohortRollup,
    control: CohortRollup,
    adjustment: str,
) -> GateVerdict:
    """Holm over the applicable metrics, each judged against its limit; `canary` and `control`
    are the pooled cohorts (for the sample minimums and the verdict's totals)."""
    limits = policy.limits()
    short = shortfalls(policy, canary, control)
    waiting: dict[Metric, str] = {}
    for metric in limits:
        needs = ("devices",) if metric in DEVICE_METRICS else ("inferences", "devices")
        gaps = [short[kind] for kind in needs if kind in short]
        if gaps:
            waiting[metric] = "; ".join(gaps)
    applicable = [m for m in limits if measures[m].applicable]
    # Metrics still short of samples stay in Holm's family with p = 1: they cannot be rejected
    # yet, and counting them keeps the family-wise bound whichever metrics are ready.
    raw = [1.0 if m in waiting else measures[m].p_value for m in applicable]
    adjusted = dict(zip(applicable, holm_adjust(raw), strict=True))

    results: list[MetricResult] = []
    for metric, limit in limits.items():
        measure = measures[metric]
        p_adjusted = adjusted.get(metric, 1.0)
        status, detail = _judge(metric, measure, limit, p_adjusted, policy, waiting, adjustment)
        results.append(
            MetricResult(
                metric,
                status,
                measure.test,
                _finite(measure.canary),
                _finite(measure.control),
                _finite(measure.effect),
                limit,
                _finite(measure.statistic),
                measure.p_value,
                p_adjusted,
                detail,
            )
        )
    failed = [r for r in results if r.status is MetricStatus.FAIL]
    pending = [r for r in results if r.status is MetricStatus.WAIT]
    outcome = Outcome.FAIL if failed else Outcome.WAIT if pending else Outcome.PASS
    return GateVerdict(
        outcome=outcome,
        stage=policy.stage,
        action=policy.on_fail if failed else None,
        alpha=policy.alpha,
        reasons=tuple(f"{r.metric.value}: {r.detail}" for r in failed),
        missing=tuple(f"{r.metric.value}: {r.detail}" for r in pending),
        metrics=tuple(results),
        canary_inferences=canary.inferences,
        control_inferences=control.inferences,
        canary_devices=len(canary.devices),
        control_devices=len(control.devices),
    )


def _judge(
    metric: Metric,
    measure: Measure,
    limit: float,
    p_adjusted: float,
    policy: GatePolicy,
    waiting: Mapping[Metric, str],
    adjustment: str,
) -> tuple[MetricStatus, str]:
    if not measure.applicable:
        return MetricStatus.NOT_APPLICABLE, "a cohort reported no values for this metric"
    if metric in waiting:
        return MetricStatus.WAIT, f"too few samples ({waiting[metric]})"
    numbers = (
        f"effect {measure.effect:.4g} against limit {limit:.4g}, p {p_adjusted:.3g} ({adjustment})"
    )
    beyond = measure.effect > limit
    significant = p_adjusted <= policy.alpha
    if beyond and significant:
        return MetricStatus.FAIL, f"{numbers} <= alpha {policy.alpha:g}"
    if beyond:
        return MetricStatus.WAIT, f"{numbers} > alpha {policy.alpha:g}: not significant yet"
    return MetricStatus.PASS, numbers


def _finite(value: float) -> float:
    """JSON carries no infinities; a z beyond 1e300 says the same thing."""
    return max(-1e300, min(1e300, value)) if value == value else 0.0
