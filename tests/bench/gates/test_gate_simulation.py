"""The gate over repeated looks on a clustered, sparse fleet: false FAILs and time to detect.

Each run simulates a few canary devices against more control devices (per-device random effects,
devices that report at half the looks with a few rows each, see `tests/unit/domain/_device_fleet`)
and evaluates, at each of 20 looks on the cumulative data, both today's pooled row gate
(`evaluate_gate` on the merged rollups, default directions) and the per-device gate
(`evaluate_devices` with the model's directions). Printed: for equal models the FAIL rate at
every look and over any look (aim: at or below alpha); for changed models the share of runs that
FAIL at some look and the mean look of the first FAIL. Quick by default (10 seeds);
TINYFLEET_BENCH_FULL=1 runs 500 seeds, the issue's figure. Nothing here asserts on time; the
only assertion is the one the figures exist for: equal models stay at or below alpha.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from service.domain.device_gates import evaluate_devices
from service.domain.directions import Direction
from service.domain.gates import GatePolicy, Metric, Outcome, evaluate_gate
from service.domain.rollups import merge_all
from tests.bench.conftest import FULL
from tests.unit.domain._device_fleet import BASELINE, FleetModel, binomial_ceiling, run

SEEDS = 500 if FULL else 10
LOOKS = 20
POLICY = GatePolicy(stage="canary", alpha=0.01, min_inferences=100, min_devices=3)
# The anomaly model's score is a reconstruction error: lower is better.
ANOMALY = BASELINE.but(score_a=2.0, score_b=18.0, device_score_sd=0.01)
LOWER_SCORE = {Metric.CONFIDENCE_MEAN: Direction.LOWER_IS_BETTER}
# Every limit at its smallest legal value and alpha 0.05: the tests alone decide, so this is the
# hardest case for the sequential bound (the limits can only remove FAILs).
HAIR_TRIGGER = GatePolicy(
    stage="hair-trigger",
    alpha=0.05,
    min_inferences=100,
    min_devices=3,
    **{name: 1e-9 for name in GatePolicy.__dataclass_fields__ if name.startswith("max_")},  # type: ignore[arg-type]
)


@dataclass(frozen=True)
class Scenario:
    name: str
    canary: FleetModel
    control: FleetModel = BASELINE
    directions: Mapping[Metric, Direction] | None = None
    should_fail: bool = False
    policy: GatePolicy = POLICY


SCENARIOS = (
    Scenario("equal models", BASELINE),
    Scenario("equal, hair-trigger a=0.05", BASELINE, policy=HAIR_TRIGGER),
    Scenario("score -0.045 (inside 0.05)", BASELINE.but(score_shift=-0.045)),
    Scenario("anomaly model improved", ANOMALY.but(score_shift=-0.05), ANOMALY, LOWER_SCORE),
    Scenario("latency x1.5", BASELINE.but(latency_median_us=6000.0), should_fail=True),
    Scenario("latency x2", BASELINE.but(latency_median_us=8000.0), should_fail=True),
    Scenario("score -0.1", BASELINE.but(score_shift=-0.1), should_fail=True),
    Scenario("score -0.2", BASELINE.but(score_shift=-0.2), should_fail=True),
    Scenario("crash wave (10 %/look)", BASELINE.but(crash_hazard=0.1), should_fail=True),
    Scenario(
        "anomaly model regressed",
        ANOMALY.but(score_shift=0.2),
        ANOMALY,
        LOWER_SCORE,
        should_fail=True,
    ),
)
FLEETS = ((3, 15), (12, 30))


def _one_run(args: tuple[Scenario, int, int, int]) -> tuple[list[bool], list[bool]]:
    scenario, seed, canary_devices, control_devices = args
    pooled, devices = [], []
    for canary, control in run(
        seed,
        scenario.canary,
        scenario.control,
        canary_devices=canary_devices,
        control_devices=control_devices,
        looks=LOOKS,
    ):
        merged = merge_all(canary.values()), merge_all(control.values())
        pooled.append(evaluate_gate(scenario.policy, *merged).outcome is Outcome.FAIL)
        verdict = evaluate_devices(scenario.policy, canary, control, directions=scenario.directions)
        devices.append(verdict.outcome is Outcome.FAIL)
    return pooled, devices


def _simulate(
    pool: ProcessPoolExecutor, scenario: Scenario, fleet: tuple[int, int]
) -> dict[str, np.ndarray]:
    jobs = [(scenario, seed, *fleet) for seed in range(SEEDS)]
    results = list(pool.map(_one_run, jobs, chunksize=10))
    return {
        "pooled": np.array([r[0] for r in results], dtype=bool),
        "devices": np.array([r[1] for r in results], dtype=bool),
    }


def _first_look(fails: np.ndarray) -> str:
    detected = fails.any(axis=1)
    if not detected.any():
        return "-"
    return f"{float((fails[detected].argmax(axis=1) + 1).mean()):.1f}"


@pytest.mark.timeout(3600)  # 500 seeds x 18 cases take several minutes
def test_false_fails_and_detection_over_repeated_looks() -> None:
    started = time.perf_counter()
    summary = []
    per_look = []
    with ProcessPoolExecutor(max_workers=2) as pool:
        for fleet in FLEETS:
            for scenario in SCENARIOS:
                fails = _simulate(pool, scenario, fleet)
                for gate in ("pooled", "devices"):
                    flags = fails[gate]
                    summary.append(
                        (
                            f"{fleet[0]}v{fleet[1]}",
                            scenario.name,
                            gate,
                            flags.any(axis=1).mean(),
                            flags.mean(axis=0).max(),
                            flags[:, -1].mean(),
                            _first_look(flags),
                        )
                    )
                    if not scenario.should_fail and scenario.canary == scenario.control:
                        label = f"{fleet[0]}v{fleet[1]} {gate} a={scenario.policy.alpha:g}"
                        per_look.append((label, flags.mean(axis=0)))
                if not scenario.should_fail:
                    ceiling = binomial_ceiling(SEEDS, scenario.policy.alpha)
                    anywhere = int(fails["devices"].any(axis=1).sum())
                    assert anywhere <= ceiling, f"{scenario.name} {fleet}: {anywhere} of {SEEDS}"

    print(f"\n{SEEDS} seeds, {LOOKS} looks, alpha {POLICY.alpha} unless named; 'pooled' =")
    print("evaluate_gate on merged rows (today), 'devices' = evaluate_devices (per device)")
    print(
        f"{'fleet':6} {'scenario':28} {'gate':8} {'FAIL any look':>13} "
        f"{'worst look':>10} {'last look':>9} {'mean 1st FAIL look':>18}"
    )
    for fleet_name, name, gate, anywhere, worst, last, first in summary:
        print(
            f"{fleet_name:6} {name:28} {gate:8} {anywhere:13.3f} {worst:10.3f} {last:9.3f} "
            f"{first:>18}"
        )
    print("\nequal models: FAIL rate at each look")
    print(f"{'':25}" + "".join(f"{look + 1:>6}" for look in range(LOOKS)))
    for label, rates in per_look:
        print(f"{label:25}" + "".join(f"{rate:6.3f}" for rate in rates))
    print(f"({time.perf_counter() - started:.0f} s)")
