"""Equal models over many seeds: the gate's FAIL rate stays at or below alpha.

Each seed draws a canary and a control cohort from the same model. The FAIL count over N seeds
is then at most Binomial(N, alpha) if the gate is calibrated; the test allows the count that such
a binomial exceeds with probability below 1e-3. The seeds are fixed, so the outcome is the same on
every run; the tolerance says how unlucky a fixed set of seeds may be for a calibrated gate.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.domain.gates import GatePolicy, Metric, Outcome, evaluate_gate
from service.domain.rollups import CohortRollup
from service.domain.stats import Alternative, mann_whitney_binned
from tests.unit.domain._device_fleet import binomial_ceiling
from tests.unit.gates.fleet import BASELINE, cohort

SEEDS = 400


def _binomial_floor(trials: int, rate: float, tail: float = 1e-3) -> int:
    return trials - binomial_ceiling(trials, 1.0 - rate, tail)


# Limits at their smallest legal value: the verdict then rests on the tests alone, which is the
# worst case for false alarms (the practical limits can only remove FAILs).
HAIR_TRIGGER = GatePolicy(
    stage="hair-trigger",
    alpha=0.05,
    min_inferences=500,
    min_devices=5,
    **{name: 1e-9 for name in GatePolicy.__dataclass_fields__ if name.startswith("max_")},  # type: ignore[arg-type]
)
DEFAULT = GatePolicy(stage="default", alpha=0.01, min_inferences=500, min_devices=5)


@pytest.fixture(scope="module")
def equal_cohorts() -> list[tuple[CohortRollup, CohortRollup]]:
    cohorts = []
    for seed in range(SEEDS):
        rng = np.random.default_rng([20261125, seed])
        behaviour = BASELINE.but(error_rate=0.1, revert_rate=0.05, crash_rate=0.05)
        canary = cohort(rng, behaviour, devices=30, inferences=1500, prefix="canary")
        control = cohort(rng, behaviour, devices=30, inferences=1500, prefix="control")
        cohorts.append((canary, control))
    return cohorts


@pytest.mark.parametrize("policy", [HAIR_TRIGGER, DEFAULT], ids=["hair-trigger", "default"])
def test_equal_models_fail_at_most_alpha_of_the_time(
    policy: GatePolicy, equal_cohorts: list[tuple[CohortRollup, CohortRollup]]
) -> None:
    verdicts = [evaluate_gate(policy, c, k) for c, k in equal_cohorts]
    fails = sum(v.outcome is Outcome.FAIL for v in verdicts)
    assert fails <= binomial_ceiling(SEEDS, policy.alpha), f"{fails} of {SEEDS} failed"
    assert all(v.outcome is not Outcome.WAIT or v.missing for v in verdicts)


def test_the_latency_test_alone_is_calibrated_not_just_conservative(
    equal_cohorts: list[tuple[CohortRollup, CohortRollup]],
) -> None:
    """Without Holm, a one-sided test at 5 % rejects about 5 % of equal cohorts: the binned
    Mann-Whitney keeps its size, so the family-wise bound above is not vacuous."""
    rejections = sum(
        mann_whitney_binned(
            c.latency_counts,
            k.latency_counts,
            Alternative.GREATER,
        ).p_value
        <= 0.05
        for c, k in equal_cohorts
    )
    assert _binomial_floor(SEEDS, 0.05) <= rejections <= binomial_ceiling(SEEDS, 0.05)


def test_the_hair_trigger_policy_does_catch_a_small_real_shift() -> None:
    rng = np.random.default_rng(99)
    canary = cohort(rng, BASELINE.but(score_a=7.5), devices=30, inferences=20_000, prefix="c")
    control = cohort(rng, BASELINE, devices=30, inferences=20_000, prefix="k")
    verdict = evaluate_gate(HAIR_TRIGGER, canary, control)
    assert verdict.outcome is Outcome.FAIL
    assert Metric.CONFIDENCE_MEAN.value in " ".join(verdict.reasons)
