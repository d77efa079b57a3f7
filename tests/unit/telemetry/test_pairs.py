"""The gate per model slot, pure: rows split into slots, pairs judged at alpha / k, combined."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from device_agent.protocol.telemetry import EventRecord
from service.domain.device_gates import evaluate_devices
from service.domain.directions import Direction
from service.domain.gates import GatePolicy, Metric, Outcome, evaluate_gate
from service.domain.rollups import CohortRollup, merge_all
from service.telemetry._pairs import (
    SUMMARY_MAX,
    Slot,
    SlotPair,
    judge_pairs,
    pair_slots,
    pooled_by_device,
)
from tests.unit.domain._device_fleet import binomial_ceiling
from tests.unit.gates.fleet import BASELINE, ModelBehaviour, cohort
from tests.unit.gates.test_false_alarms import DEFAULT, HAIR_TRIGGER

POLICY = GatePolicy(stage="canary", alpha=0.01, min_inferences=500, min_devices=5)
# The anomaly model's score is a reconstruction error: low is normal.
VIBRATION = BASELINE.but(score_a=3.0, score_b=7.0, latency_median_us=9000.0)


def row(core: str, model: str, version: str, rollup: CohortRollup) -> tuple[dict[str, Any], Any]:
    return {"core": core, "model_id": model, "model_version": version}, rollup


def by_device(rows: list[tuple[dict[str, Any], CohortRollup]]) -> dict[str, list[Any]]:
    """Rows of one-device rollups, as the store returns them: device id -> its rows."""
    found: dict[str, list[Any]] = {}
    for key, rollup in rows:
        [device] = rollup.devices
        found.setdefault(device, []).append((key, rollup))
    return found


def per_device(
    rng: np.random.Generator, behaviour: ModelBehaviour, *, devices: int, n: int, prefix: str
) -> dict[str, CohortRollup]:
    """A cohort of `devices` independent devices sharing `n` inferences, per device (the gate's
    statistics take devices, not rows, as the unit)."""
    out: dict[str, CohortRollup] = {}
    for i in range(devices):
        one = cohort(rng, behaviour, devices=1, inferences=n // devices, prefix=f"{prefix}{i}")
        [device] = one.devices
        out[device] = one
    return out


def inferences(device: str, n: int = 3, score: float = 0.9) -> CohortRollup:
    return CohortRollup.from_columns([device], np.full(n, 1000), np.full(n, score))


def events(device: str, *records: EventRecord) -> CohortRollup:
    return CohortRollup.from_records(device, events=records)


def revert(core: str | None) -> EventRecord:
    return EventRecord(1, "revert", core, None, 1, "selftest failed")


# -- splitting rows into slots ------------------------------------------------------------------


def test_rows_split_by_core_and_model_with_their_events() -> None:
    canary = [
        row("m4-0", "kws", "2", inferences("a")),
        row("m4-0", "kws", "2", inferences("b")),
        row("m4-1", "vib", "2", inferences("a", 5)),
        row("m4-1", "", "", events("b", revert("m4-1"))),
        row("", "", "", events("c", EventRecord(1, "reject", None, None, 3, "bad"))),
        row("", "", "", inferences("z", 0)),  # presence only: not a device of any model
    ]
    control = [
        row("m4-0", "kws", "1", inferences("k", 4)),
        row("m4-0", "kws", "1.1", inferences("l", 4)),
        row("m4-2", "old", "1", inferences("k")),  # a model the new release dropped
    ]
    pairs = {p.slot: p for p in pair_slots(by_device(canary), by_device(control))}
    assert list(pairs) == [Slot("m4-0", "kws"), Slot("m4-1", "vib")]
    kws, vib = pairs[Slot("m4-0", "kws")], pairs[Slot("m4-1", "vib")]
    assert (kws.canary.inferences, kws.control.inferences) == (6, 8)
    assert kws.canary_versions == ("2",) and kws.control_versions == ("1", "1.1")
    # the core's revert counts for its model only; the device-level error for every model
    assert kws.canary.devices == {"a", "b", "c"} and kws.canary.devices_with_error == {"c"}
    assert not kws.canary.devices_reverted
    assert vib.canary.devices == {"a", "b", "c"} and vib.canary.devices_reverted == {"b"}
    assert vib.canary.inferences == 5
    assert vib.control == CohortRollup.empty()


def test_a_core_with_events_but_no_inferences_gets_a_device_rate_slot() -> None:
    canary = [
        row("m4-0", "kws", "2", inferences("a")),
        row("m4-1", "", "", events("a", revert("m4-1"))),
    ]
    control = [row("m4-1", "vib", "1", inferences("k")), row("m4-0", "kws", "1", inferences("k"))]
    pairs = pair_slots(by_device(canary), by_device(control))
    assert [p.slot.label for p in pairs] == ["m4-0/kws", "m4-1/events"]
    quiet = pairs[1]
    assert quiet.canary.devices_reverted == {"a"} and quiet.control.devices == {"k"}


# -- judging and combining ----------------------------------------------------------------------


def make_pair(
    seed: int,
    slot: Slot,
    canary: ModelBehaviour,
    control: ModelBehaviour,
    *,
    devices: int = 30,
    n: int = 1500,
) -> SlotPair:
    rng = np.random.default_rng([20261125, seed, len(slot.label)])
    return SlotPair(
        slot,
        per_device(rng, canary, devices=devices, n=n, prefix="canary"),
        per_device(rng, control, devices=devices, n=n, prefix="control"),
        ("2",),
        ("1",),
    )


KWS, VIB = Slot("m4-0", "kws"), Slot("m4-1", "vibration")


def two_slots(
    seed: int, kws: ModelBehaviour = BASELINE, vibration: ModelBehaviour = VIBRATION, **kw: Any
) -> list[SlotPair]:
    return [
        make_pair(seed, KWS, kws, BASELINE, **kw),
        make_pair(seed, VIB, vibration, VIBRATION, **kw),
    ]


def test_any_failing_pair_fails_the_gate_and_is_named() -> None:
    verdict = judge_pairs(POLICY, two_slots(1, vibration=VIBRATION.but(latency_median_us=14000.0)))
    assert verdict.outcome is Outcome.FAIL and verdict.pair_alpha == 0.005
    assert [v.outcome for _, v in verdict.pairs] == [Outcome.PASS, Outcome.FAIL]
    text, numbers = verdict.summary()
    assert text.startswith("m4-1/vibration: latency-p95") and list(numbers) == ["latency-p95.p"]
    assert verdict.reason().startswith("m4-1/vibration latency-p95: effect")
    assert verdict.document()["decisive"] == "m4-1/vibration"


def test_a_fail_outranks_a_wait_and_a_wait_outranks_a_pass() -> None:
    # no device events, so equal cohorts cannot WAIT on a chance excess of device rates
    kws, vibration = (b.but(error_rate=0.0, crash_rate=0.0) for b in (BASELINE, VIBRATION))
    regressed = make_pair(2, KWS, kws.but(score_a=5.0), kws)
    equal = make_pair(2, KWS, kws, kws)
    short = make_pair(2, VIB, vibration, vibration, devices=3, n=100)
    assert judge_pairs(POLICY, [regressed, short]).outcome is Outcome.FAIL
    waiting = judge_pairs(POLICY, [equal, short])
    assert waiting.outcome is Outcome.WAIT
    assert waiting.summary()[0] == "too few samples: m4-1/vibration"
    passing = judge_pairs(POLICY, [equal, make_pair(2, VIB, vibration, vibration)])
    assert passing.outcome is Outcome.PASS
    assert passing.summary()[0] == "every model within its limits (2 judged)"


def test_each_pair_is_judged_at_alpha_over_k() -> None:
    pairs = two_slots(3)
    verdict = judge_pairs(POLICY, pairs)
    for (pair, judged), again in zip(verdict.pairs, pairs, strict=True):
        assert pair is again and judged.alpha == POLICY.alpha / 2
        again_judged = evaluate_devices(
            replace(POLICY, alpha=0.005), pair.canary_by_device, pair.control_by_device
        )
        assert judged == again_judged
    assert verdict.document()["alpha"] == POLICY.alpha


def test_without_any_slot_the_gate_waits_in_the_usual_shape() -> None:
    verdict = judge_pairs(POLICY, [])
    assert verdict.outcome is Outcome.WAIT and verdict.pairs == ()
    text, numbers = verdict.summary()
    assert text.startswith("too few samples") and numbers["canary_inferences"] == 0
    document = verdict.document()
    assert document["outcome"] == "wait" and document["pairs"] == [] and document["metrics"]


def test_a_device_rate_slot_is_judged_on_device_rates_only() -> None:
    rng = np.random.default_rng(4)
    crashing = per_device(rng, BASELINE.but(crash_rate=0.9), devices=30, n=0, prefix="c")
    healthy = per_device(rng, BASELINE.but(crash_rate=0.0), devices=30, n=0, prefix="k")
    verdict = judge_pairs(POLICY, [SlotPair(Slot("m4-1", ""), crashing, healthy, (), ())])
    assert verdict.outcome is Outcome.FAIL
    [(_, judged)] = verdict.pairs
    assert {m.metric.value for m in judged.metrics} == {"error-rate", "revert-rate", "crash-rate"}
    assert verdict.summary()[0].startswith("m4-1/events: crash-rate")


def test_summaries_stay_short_with_many_failing_pairs() -> None:
    worse = BASELINE.but(score_a=4.0, latency_median_us=8000.0, anomaly_rate=0.2)
    slots = [Slot(f"m4-{i}", f"model-with-a-long-name-{i}") for i in range(4)]
    verdict = judge_pairs(POLICY, [make_pair(5, s, worse, BASELINE) for s in slots])
    text, numbers = verdict.summary()
    assert verdict.outcome is Outcome.FAIL
    assert len(text) == SUMMARY_MAX and text.endswith("...") and len(numbers) <= 3
    assert len(verdict.document()["pairs"]) == 4


# -- false alarms ---------------------------------------------------------------------------------

SEEDS = 300


@pytest.fixture(scope="module")
def equal_releases() -> list[list[SlotPair]]:
    """Two slots per seed, each model equal in canary and control."""
    noisy = {"error_rate": 0.1, "revert_rate": 0.05, "crash_rate": 0.05}
    kws, vibration = BASELINE.but(**noisy), VIBRATION.but(**noisy)
    return [
        [make_pair(seed, KWS, kws, kws, n=1000), make_pair(seed, VIB, vibration, vibration, n=1000)]
        for seed in range(SEEDS)
    ]


@pytest.mark.parametrize("policy", [HAIR_TRIGGER, DEFAULT], ids=["hair-trigger", "default"])
def test_equal_releases_fail_at_most_alpha_of_the_time(
    policy: GatePolicy, equal_releases: list[list[SlotPair]]
) -> None:
    fails = sum(judge_pairs(policy, pairs).outcome is Outcome.FAIL for pairs in equal_releases)
    assert fails <= binomial_ceiling(SEEDS, policy.alpha), f"{fails} of {SEEDS} failed"


def test_the_split_is_what_keeps_the_bound(equal_releases: list[list[SlotPair]]) -> None:
    """Judging both slots at the full alpha fails more equal releases than the split does."""
    unsplit = sum(
        any(evaluate_gate(HAIR_TRIGGER, p.canary, p.control).outcome is Outcome.FAIL for p in pairs)
        for pairs in equal_releases
    )
    split = sum(
        judge_pairs(HAIR_TRIGGER, pairs).outcome is Outcome.FAIL for pairs in equal_releases
    )
    assert split < unsplit


def test_device_level_failures_without_any_model_fail_on_the_pooled_rows() -> None:
    """Devices that crash before any core reports (core-less events) still fail the gate."""
    crash = EventRecord(1, "crash", None, None, 0, "agent crashed")
    canary = [row("", "", "", events(f"c{i}", crash)) for i in range(20)]
    control = [row("", "", "", inferences(f"k{i}", 0)) for i in range(20)]
    pooled = (pooled_by_device(by_device(canary)), pooled_by_device(by_device(control)))
    assert pair_slots(by_device(canary), by_device(control)) == []
    verdict = judge_pairs(POLICY, [], pooled=pooled)
    assert verdict.outcome is Outcome.FAIL
    text, numbers = verdict.summary()
    assert text.startswith("all cores: crash-rate 1 > 0.02") and list(numbers) == ["crash-rate.p"]
    assert verdict.reason().startswith("all cores crash-rate: effect 1")
    assert verdict.document()["outcome"] == "fail" and verdict.document()["decisive"] is None


# -- per device, and held for the stage's own devices ------------------------------------------


def test_pairs_hold_each_cohort_per_device() -> None:
    canary = [row("m4-0", "kws", "2", inferences(d)) for d in ("a", "b")]
    canary.append(row("", "", "", events("c", EventRecord(1, "reject", None, None, 3, "bad"))))
    control = [row("m4-0", "kws", "1", inferences(d, 4)) for d in ("k", "l")]
    [pair] = pair_slots(by_device(canary), by_device(control))
    assert set(pair.canary_by_device) == {"a", "b", "c"}  # c: a device-level error only
    assert (
        pair.canary_by_device["a"].devices == {"a"} and pair.canary_by_device["a"].inferences == 3
    )
    assert set(pair.control_by_device) == {"k", "l"}
    assert pair.canary == merge_all(pair.canary_by_device.values())


def test_a_pass_is_held_as_a_wait_until_the_stage_s_devices_soaked() -> None:
    passing = judge_pairs(POLICY, two_slots(2))  # a seed whose equal cohorts PASS
    assert passing.outcome is Outcome.PASS
    figures = {"stage_devices": 20.0, "stage_soaked": 2.0, "stage_needed": 5.0}
    held = passing.held("2 of 20 stage devices soaked (the gate needs 5)", figures)
    assert held.outcome is Outcome.WAIT
    text, numbers = held.summary()
    assert text == "2 of 20 stage devices soaked (the gate needs 5)" and numbers == figures
    assert held.reason().startswith("2 of 20 stage devices soaked")
    assert held.document()["hold"] and held.numbers()["stage_soaked"] == 2.0
    assert passing.held(None, figures).outcome is Outcome.PASS


def test_a_fail_is_not_held() -> None:
    failing = judge_pairs(POLICY, two_slots(1, vibration=VIBRATION.but(latency_median_us=14000.0)))
    held = failing.held("0 of 20 stage devices soaked (the gate needs 5)", {})
    assert held.outcome is Outcome.FAIL and held.hold is None


def test_the_slot_s_score_direction_comes_from_its_release() -> None:
    """An anomaly model whose scores (reconstruction errors) fall improved: judged with the
    direction its upload recorded it is no FAIL; judged as a classifier it would be."""
    lower = VIBRATION.but(score_a=1.5, score_b=8.5)  # mean score 0.15 against 0.3
    pairs = [make_pair(5, VIB, lower, VIBRATION)]
    assert judge_pairs(POLICY, pairs).outcome is Outcome.FAIL
    anomaly = {"vibration": {Metric.CONFIDENCE_MEAN: Direction.LOWER_IS_BETTER}}
    assert judge_pairs(POLICY, pairs, directions=anomaly).outcome is not Outcome.FAIL


def test_alpha_is_split_over_the_release_s_slots_at_every_look() -> None:
    """One slot has reported so far of a two-core release: it is judged at alpha / 2 already,
    as it will be once the other reports (a split that grew with the slots would judge the
    early looks at alpha)."""
    [(_, judged)] = judge_pairs(
        POLICY, [make_pair(3, KWS, BASELINE, BASELINE)], expected_slots=2
    ).pairs
    assert judged.alpha == POLICY.alpha / 2


def test_a_device_in_both_cohorts_counts_twice_not_as_an_error() -> None:
    """The last stage's control is the canary devices' own rows from before their update."""
    rng = np.random.default_rng(9)
    before = per_device(rng, BASELINE, devices=10, n=1000, prefix="d")
    after = per_device(rng, BASELINE, devices=10, n=1000, prefix="d")
    assert set(before) == set(after)
    verdict = judge_pairs(POLICY, [SlotPair(KWS, after, before, ("2",), ("1",))])
    [(_, judged)] = verdict.pairs
    assert judged.canary_devices == 10 and judged.control_devices == 10
