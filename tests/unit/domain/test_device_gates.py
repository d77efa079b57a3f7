"""The per-device gate: equal models on a few clustered, sparse devices FAIL at most alpha of the
time at any look; the pooled row gate on the same data does not; regressions still FAIL; metric
directions come from the model's metadata; bad maps are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device_agent.protocol.telemetry import EventRecord
from service.domain.device_gates import directions_for_model, evaluate_devices
from service.domain.directions import Direction, score_direction
from service.domain.gates import (
    GateError,
    GatePolicy,
    GateVerdict,
    Metric,
    MetricStatus,
    Outcome,
    evaluate_gate,
)
from service.domain.rollups import CohortRollup, RollupError, merge_all, merge_by_device
from tests.unit.domain._device_fleet import BASELINE, Cohort, FleetModel, binomial_ceiling, run

PREBUILT = Path(__file__).parents[3] / "firmware" / "models" / "prebuilt"
POLICY = GatePolicy(stage="canary", alpha=0.01, min_inferences=100, min_devices=3)
SEEDS, LOOKS = 100, 10
# A true confidence drop just inside the 0.05 limit: a real but acceptable difference.
INSIDE_THE_LIMIT = BASELINE.but(score_shift=-0.045)


CEILING = binomial_ceiling(SEEDS, POLICY.alpha)


def _pooled(canary: Cohort, control: Cohort) -> GateVerdict:
    return evaluate_gate(POLICY, merge_all(canary.values()), merge_all(control.values()))


def _fails(model: FleetModel) -> dict[str, np.ndarray]:
    """seed x look FAIL flags of the pooled and the per-device gate on the same looks."""
    fails = {"pooled": np.zeros((SEEDS, LOOKS), bool), "devices": np.zeros((SEEDS, LOOKS), bool)}
    for seed in range(SEEDS):
        for look, (canary, control) in enumerate(run(seed, model, looks=LOOKS)):
            fails["pooled"][seed, look] = _pooled(canary, control).outcome is Outcome.FAIL
            verdict = evaluate_devices(POLICY, canary, control)
            fails["devices"][seed, look] = verdict.outcome is Outcome.FAIL
    return fails


@pytest.fixture(scope="module")
def equal() -> dict[str, np.ndarray]:
    return _fails(BASELINE)


@pytest.fixture(scope="module")
def inside() -> dict[str, np.ndarray]:
    return _fails(INSIDE_THE_LIMIT)


def test_equal_models_on_three_canary_devices_fail_at_most_alpha_at_a_look(
    equal: dict[str, np.ndarray],
) -> None:
    """Rows cluster by device: the pooled gate FAILs an equal model far above alpha."""
    final = equal["devices"][:, -1].sum()
    assert final <= CEILING, f"{final} of {SEEDS} equal runs failed at the last look"
    assert equal["pooled"][:, -1].sum() > CEILING  # the defect the per-device gate fixes


def test_equal_models_fail_at_most_alpha_over_all_looks(equal: dict[str, np.ndarray]) -> None:
    anywhere = equal["devices"].any(axis=1).sum()
    assert anywhere <= CEILING, f"{anywhere} of {SEEDS} equal runs failed at some look"
    assert equal["pooled"].any(axis=1).sum() > CEILING


def test_a_true_drop_inside_the_limit_does_not_fail_at_any_look(
    inside: dict[str, np.ndarray],
) -> None:
    """Repeated looks on cumulative data: the pooled gate FAILs such a run at some look."""
    anywhere = inside["devices"].any(axis=1).sum()
    assert anywhere <= CEILING, f"{anywhere} of {SEEDS} runs failed inside the limit"
    assert inside["pooled"].any(axis=1).sum() > 2 * CEILING


def _last_look(
    model: FleetModel, seed: int, old: FleetModel = BASELINE, canary: int = 12, control: int = 30
) -> tuple[Cohort, Cohort]:
    *_, last = run(seed, model, old, looks=LOOKS, canary_devices=canary, control_devices=control)
    return last


REGRESSIONS = [
    (BASELINE.but(latency_median_us=8000.0), Metric.LATENCY_P95),
    (BASELINE.but(score_shift=-0.2), Metric.CONFIDENCE_MEAN),
    (BASELINE.but(crash_hazard=0.3), Metric.CRASH_RATE),
]


@pytest.mark.parametrize(("model", "metric"), REGRESSIONS, ids=[m.value for _, m in REGRESSIONS])
def test_a_clear_regression_fails_on_its_metric(model: FleetModel, metric: Metric) -> None:
    canary, control = _last_look(model, 3)
    verdict = evaluate_devices(POLICY, canary, control)
    assert verdict.outcome is Outcome.FAIL and verdict.action is POLICY.on_fail
    assert {m.metric for m in verdict.metrics if m.status is MetricStatus.FAIL} == {metric}
    assert "(Holm, anytime)" in verdict.reasons[0]


def _devices(prefix: str, count: int, crashed: int) -> dict[str, CohortRollup]:
    crash = EventRecord(1, "crash", "m4-0", "r2", 0, "hard fault")
    rng = np.random.default_rng(count)
    devices = {}
    for i in range(count):
        name = f"{prefix}-{i}"
        rows = CohortRollup.from_columns(
            [name], rng.integers(3000, 5000, 60), rng.beta(8.0, 2.0, 60)
        )
        events = CohortRollup.from_records(name, events=[crash] if i < crashed else [])
        devices[name] = rows.merge(events)
    return devices


def test_device_rates_are_exact_with_few_devices() -> None:
    """2 of 3 canary devices crashed, none of 15 controls: the z-test said p 0.0004."""
    canary, control = _devices("c", 3, 2), _devices("k", 15, 0)
    pooled = evaluate_gate(POLICY, merge_all(canary.values()), merge_all(control.values()))
    crash = next(m for m in pooled.metrics if m.metric is Metric.CRASH_RATE)
    assert crash.test == "fisher-exact" and crash.p_value == pytest.approx(3 / 153)
    assert crash.status is MetricStatus.WAIT  # beyond the limit, not significant
    per_device = evaluate_devices(POLICY, canary, control)
    crash = next(m for m in per_device.metrics if m.metric is Metric.CRASH_RATE)
    assert crash.p_value >= 3 / 153 and crash.status is MetricStatus.WAIT


def _sidecar(stem: str) -> dict[str, object]:
    return json.loads((PREBUILT / f"{stem}.json").read_text())  # type: ignore[no-any-return]


def test_the_score_direction_comes_from_the_model_metadata() -> None:
    assert score_direction(_sidecar("kws-v2.0.0")) is Direction.HIGHER_IS_BETTER
    assert score_direction(_sidecar("vibration-v2.0.0")) is Direction.LOWER_IS_BETTER
    assert score_direction({"task": "anomaly", "threshold": 0.1}) is Direction.LOWER_IS_BETTER
    assert score_direction({"task": "anomaly", "scoreDirection": "higher-is-better"}) is (
        Direction.HIGHER_IS_BETTER
    )
    assert score_direction({}) is Direction.HIGHER_IS_BETTER
    assert directions_for_model(_sidecar("vibration-v1.0.0")) == {
        Metric.CONFIDENCE_MEAN: Direction.LOWER_IS_BETTER
    }


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"kind": "firmware"}, "does not describe a model"),
        ({"scoreDirection": "up"}, "scoreDirection"),
        ({"task": "regression"}, "task"),
    ],
    ids=["firmware", "unknown-direction", "unknown-task"],
)
def test_metadata_that_does_not_say_is_refused(metadata: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_direction(metadata)


# An anomaly model's score is its reconstruction error: v2 scores lower on the same healthy data.
ANOMALY = BASELINE.but(score_a=2.0, score_b=18.0, device_score_sd=0.01)


@pytest.mark.parametrize("gate", ["pooled", "devices"])
def test_an_anomaly_models_improvement_is_not_a_drop(gate: str) -> None:
    directions = directions_for_model(_sidecar("vibration-v2.0.0"))
    better = _last_look(ANOMALY.but(score_shift=-0.08), 5, ANOMALY)
    worse = _last_look(ANOMALY.but(score_shift=+0.2), 5, ANOMALY)

    def judge(pair: tuple[Cohort, Cohort], **kw: object) -> GateVerdict:
        canary, old = pair
        if gate == "pooled":
            pooled = merge_all(canary.values()), merge_all(old.values())
            return evaluate_gate(POLICY, *pooled, **kw)  # type: ignore[arg-type]
        return evaluate_devices(POLICY, canary, old, **kw)  # type: ignore[arg-type]

    def confidence(verdict: GateVerdict) -> MetricStatus:
        return next(m.status for m in verdict.metrics if m.metric is Metric.CONFIDENCE_MEAN)

    if gate == "pooled":  # the defect: by default the improvement FAILs as a confidence drop
        assert confidence(judge(better)) is MetricStatus.FAIL
    assert confidence(judge(better, directions=directions)) is MetricStatus.PASS
    assert confidence(judge(worse, directions=directions)) is MetricStatus.FAIL


def test_few_devices_wait_and_say_what_is_missing() -> None:
    canary, control = _devices("c", 2, 0), _devices("k", 15, 0)
    verdict = evaluate_devices(POLICY, canary, control)
    assert verdict.outcome is Outcome.WAIT and verdict.canary_devices == 2
    assert any("canary: 2 of 3 devices" in line for line in verdict.missing)


def test_the_verdict_is_the_pooled_shape_with_finite_numbers_and_ignores_key_order() -> None:
    canary, control = _last_look(BASELINE.but(latency_median_us=8000.0), 9)
    verdict = evaluate_devices(POLICY, canary, control)
    stored = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert GateVerdict.from_dict(stored) == verdict
    pooled = _pooled(canary, control)
    assert [m.metric for m in verdict.metrics] == [m.metric for m in pooled.metrics]
    assert [m.effect for m in verdict.metrics] == [m.effect for m in pooled.metrics]
    assert (verdict.canary_inferences, verdict.control_devices) == (
        pooled.canary_inferences,
        pooled.control_devices,
    )
    reversed_maps = (dict(reversed(canary.items())), dict(reversed(control.items())))
    assert evaluate_devices(POLICY, *reversed_maps) == verdict


@pytest.mark.parametrize(
    ("canary", "control", "directions", "message"),
    [
        (_devices("c", 3, 0), _devices("c", 4, 0), None, "both cohorts"),
        ({"c-0": merge_all(_devices("c", 2, 0).values())}, _devices("k", 3, 0), None, "holds rows"),
        (_devices("c", 3, 0), _devices("k", 3, 0), {Metric.LABEL_SHIFT: "up"}, "direction"),
    ],
    ids=["device-in-both", "rollup-of-another-device", "label-shift-direction"],
)
def test_bad_maps_are_refused(
    canary: Cohort, control: Cohort, directions: object, message: str
) -> None:
    with pytest.raises(GateError, match=message):
        evaluate_devices(POLICY, canary, control, directions=directions)  # type: ignore[arg-type]


def test_rollups_merge_by_device_into_the_gates_input() -> None:
    crash = EventRecord(1, "crash", "m4-0", "r2", 0, "hard fault")
    a_rows = CohortRollup.from_columns(["a"], [1000, 2000], [0.5, 0.6])
    a_more = CohortRollup.from_columns(["a"], [3000], [0.7])
    b_crash = CohortRollup.from_records("b", events=[crash])
    merged = merge_by_device([a_rows, b_crash, a_more, CohortRollup.empty()])
    assert list(merged) == ["a", "b"] and merged["a"] == a_rows.merge(a_more)
    assert merged["b"].devices_crashed == {"b"}
    with pytest.raises(RollupError, match="cannot be split"):
        merge_by_device([a_rows.merge(b_crash)])
