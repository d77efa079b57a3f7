"""Gate verdicts on synthetic cohorts: regressions FAIL for the right reason, equal models PASS,
thin evidence WAITs; policies refuse values outside their limits; verdicts round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.errors import DomainError
from service.domain.gates import (
    FailAction,
    GateError,
    GatePolicy,
    GatePolicyError,
    GateVerdict,
    Metric,
    MetricStatus,
    Outcome,
    evaluate_gate,
)
from service.domain.rollups import CohortRollup
from tests.unit.gates.fleet import BASELINE, ModelBehaviour, cohort

POLICY = GatePolicy(stage="canary-5pct", alpha=0.01, min_inferences=1000, min_devices=5)


def _cohorts(
    seed: int,
    new: ModelBehaviour,
    *,
    devices: int = 40,
    inferences: int = 20_000,
    old: ModelBehaviour = BASELINE,
) -> tuple[CohortRollup, CohortRollup]:
    rng = np.random.default_rng(seed)
    canary = cohort(rng, new, devices=devices, inferences=inferences, prefix="canary")
    control = cohort(rng, old, devices=devices, inferences=inferences, prefix="control")
    return canary, control


def _failed(verdict: GateVerdict) -> set[Metric]:
    return {m.metric for m in verdict.metrics if m.status is MetricStatus.FAIL}


REGRESSIONS = [
    (BASELINE.but(latency_median_us=6000.0), Metric.LATENCY_P95),
    (BASELINE.but(score_a=5.0), Metric.CONFIDENCE_MEAN),  # mean 0.71 instead of 0.80
    (BASELINE.but(anomaly_rate=0.09), Metric.ANOMALY_RATE),
    (BASELINE.but(label_shares=(0.30, 0.25, 0.15, 0.30)), Metric.LABEL_SHIFT),
    (BASELINE.but(error_rate=0.5), Metric.ERROR_RATE),
    (BASELINE.but(revert_rate=0.4), Metric.REVERT_RATE),
    (BASELINE.but(crash_rate=0.5), Metric.CRASH_RATE),
]


@pytest.mark.parametrize(("new", "metric"), REGRESSIONS, ids=[m.value for _, m in REGRESSIONS])
def test_a_regressing_model_fails_on_the_metric_it_regresses(
    new: ModelBehaviour, metric: Metric
) -> None:
    policy = GatePolicy(stage="canary", on_fail=FailAction.ROLLBACK)
    verdict = evaluate_gate(policy, *_cohorts(1, new))
    assert verdict.outcome is Outcome.FAIL
    assert verdict.action is FailAction.ROLLBACK
    assert _failed(verdict) == {metric}
    (reason,) = verdict.reasons
    assert reason.startswith(metric.value)
    result = next(m for m in verdict.metrics if m.metric is metric)
    assert result.effect > result.limit and result.p_adjusted <= policy.alpha


def test_an_equal_model_passes_with_its_numbers() -> None:
    verdict = evaluate_gate(POLICY, *_cohorts(2, BASELINE))
    assert verdict.outcome is Outcome.PASS, verdict.reasons + verdict.missing
    assert verdict.action is None and verdict.reasons == () and verdict.missing == ()
    assert {m.metric for m in verdict.metrics} == set(Metric)
    assert all(m.status is MetricStatus.PASS for m in verdict.metrics)
    assert (verdict.canary_inferences, verdict.canary_devices) == (20_000, 40)


def test_a_significant_but_negligible_shift_on_a_large_fleet_passes() -> None:
    canary, control = _cohorts(
        3, BASELINE.but(latency_median_us=4200.0), devices=500, inferences=400_000
    )
    verdict = evaluate_gate(POLICY, canary, control)
    latency = next(m for m in verdict.metrics if m.metric is Metric.LATENCY_P95)
    assert latency.p_adjusted < 1e-6  # the 5 % slowdown is certain...
    assert 0.03 < latency.effect < latency.limit  # ...but below the 20 % the policy tolerates
    assert verdict.outcome is Outcome.PASS


@pytest.mark.parametrize(
    ("devices", "inferences", "missing"),
    [
        (40, 300, "canary: 300 of 1000 inferences"),
        (3, 20_000, "canary: 3 of 5 devices"),
    ],
    ids=["few-inferences", "few-devices"],
)
def test_too_few_samples_wait_and_say_what_is_missing(
    devices: int, inferences: int, missing: str
) -> None:
    rng = np.random.default_rng(4)
    canary = cohort(rng, BASELINE, devices=devices, inferences=inferences, prefix="canary")
    control = cohort(rng, BASELINE, devices=40, inferences=20_000, prefix="control")
    verdict = evaluate_gate(POLICY, canary, control)
    assert verdict.outcome is Outcome.WAIT and verdict.action is None
    assert any(missing in line for line in verdict.missing)
    assert "control" not in " ".join(verdict.missing)


def test_device_failures_fail_before_the_inference_sample_is_complete() -> None:
    canary, control = _cohorts(5, BASELINE.but(crash_rate=0.6), inferences=300)
    verdict = evaluate_gate(POLICY, canary, control)
    assert verdict.outcome is Outcome.FAIL and _failed(verdict) == {Metric.CRASH_RATE}
    assert any(m.status is MetricStatus.WAIT for m in verdict.metrics)


def test_an_effect_beyond_the_limit_without_significance_waits() -> None:
    scores = np.linspace(0.1, 0.9, 30)
    latency = np.full(30, 1000)
    control = CohortRollup.from_columns([f"c{i}" for i in range(5)], latency, scores)
    canary = CohortRollup.from_columns([f"n{i}" for i in range(5)], latency, scores - 0.08)
    policy = GatePolicy(stage="pilot", min_inferences=20, max_confidence_drop=0.05)
    verdict = evaluate_gate(policy, canary, control)
    confidence = next(m for m in verdict.metrics if m.metric is Metric.CONFIDENCE_MEAN)
    assert confidence.effect == pytest.approx(0.08)
    assert confidence.p_adjusted > policy.alpha
    assert confidence.status is MetricStatus.WAIT
    assert verdict.outcome is Outcome.WAIT
    assert any("not significant yet" in line for line in verdict.missing)


def test_disabled_and_unreported_metrics_do_not_gate() -> None:
    latency, scores = np.full(100, 900), np.linspace(0.2, 0.9, 100)
    canary = CohortRollup.from_columns([f"n{i}" for i in range(5)], latency, scores)
    control = CohortRollup.from_columns([f"c{i}" for i in range(5)], latency, scores)
    policy = GatePolicy(stage="s", min_inferences=50, max_crash_rate_increase=None)
    verdict = evaluate_gate(policy, canary, control)
    statuses = {m.metric: m.status for m in verdict.metrics}
    assert Metric.CRASH_RATE not in statuses
    assert statuses[Metric.ANOMALY_RATE] is MetricStatus.NOT_APPLICABLE
    assert statuses[Metric.LABEL_SHIFT] is MetricStatus.NOT_APPLICABLE
    assert verdict.outcome is Outcome.PASS


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(30, 3000), st.integers(1, 30))
def test_identical_cohorts_never_fail_and_swapping_them_changes_nothing(
    seed: int, inferences: int, devices: int
) -> None:
    rng = np.random.default_rng(seed)
    one = cohort(rng, BASELINE, devices=devices, inferences=inferences, prefix="x")
    other = CohortRollup.from_dict(one.to_dict())
    policy = GatePolicy(stage="s", min_inferences=20, min_devices=1)
    forward, backward = evaluate_gate(policy, one, other), evaluate_gate(policy, other, one)
    assert forward.to_dict() == backward.to_dict()
    assert forward.outcome is Outcome.PASS
    assert all(m.effect == pytest.approx(0.0, abs=1e-12) for m in forward.metrics)


@pytest.mark.parametrize("seed", [6, 7])
def test_a_verdict_round_trips_through_json(seed: int) -> None:
    canary, control = _cohorts(seed, BASELINE.but(score_a=5.0), inferences=3000)
    verdict = evaluate_gate(POLICY, canary, control)
    stored = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert GateVerdict.from_dict(stored) == verdict


def test_a_malformed_stored_verdict_is_refused() -> None:
    stored = evaluate_gate(POLICY, *_cohorts(8, BASELINE, inferences=2000)).to_dict()
    for broken in (
        {**stored, "outcome": "maybe"},
        {k: v for k, v in stored.items() if k != "metrics"},
    ):
        with pytest.raises(GateError, match="malformed"):
            GateVerdict.from_dict(broken)


def test_a_policy_round_trips_through_a_document() -> None:
    policy = GatePolicy(stage="ring-2", alpha=0.05, max_label_psi=None, on_fail=FailAction.ABORT)
    assert GatePolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


NO_LIMITS = {name: None for name in GatePolicy.__dataclass_fields__ if name.startswith("max_")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 0.5}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"min_inferences": 5}, "min_inferences"),
        ({"min_devices": 0}, "min_devices"),
        ({"min_devices": 2.5}, "min_devices"),
        ({"max_confidence_drop": -0.1}, "max_confidence_drop"),
        ({"max_confidence_drop": 1.5}, "max_confidence_drop"),
        ({"max_latency_p95_increase": float("nan")}, "max_latency_p95_increase"),
        (NO_LIMITS, "at least one metric"),
        ({"stage": ""}, "stage"),
        ({"on_fail": "explode"}, "on_fail"),
    ],
    ids=[
        "alpha-zero",
        "alpha-too-loose",
        "alpha-bool",
        "tiny-sample",
        "no-devices",
        "fractional-devices",
        "negative-limit",
        "limit-above-range",
        "nan-limit",
        "no-metric",
        "empty-stage",
        "unknown-action",
    ],
)
def test_a_policy_outside_its_hard_limits_is_refused(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(GatePolicyError, match=message) as raised:
        GatePolicy(**{"stage": "s", **kwargs})  # type: ignore[arg-type]
    assert isinstance(raised.value, DomainError)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"stage": "s", "alpah": 0.1}, "unknown policy fields"),
        ({"stage": "s", "on_fail": "x"}, "on_fail"),
    ],
    ids=["misspelt-field", "unknown-action"],
)
def test_a_bad_policy_document_is_refused(document: dict[str, object], message: str) -> None:
    with pytest.raises(GatePolicyError, match=message):
        GatePolicy.from_dict(document)
