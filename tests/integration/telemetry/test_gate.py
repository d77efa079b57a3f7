"""The telemetry gate over stored rollups: regressed -> FAIL, equal -> PASS, few samples -> WAIT."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.domain.rollout_events import Verdict
from service.domain.spec import FailureAction
from service.storage import DeviceGroup, GroupKind, RolloutStage
from service.telemetry import IngestWorker, TelemetryGate
from tests.contract.storage.factories import release, rollout
from tests.integration.telemetry._world import T0_MS, Fleet, halves, plan_jobs
from tests.integration.telemetry.conftest import Db

STARTED = datetime.fromtimestamp(T0_MS / 1000, tz=UTC) - timedelta(minutes=5)
NOW = STARTED + timedelta(hours=1)
GATE = {"min_inferences": 500, "min_devices": 5, "on_fail": "rollback"}


def setup_rollout(
    db: Db,
    gate: dict[str, object] | None = GATE,
    jobs: Mapping[str, tuple[int, str]] | None = None,
) -> object:
    """A one-stage rollout of rel-2 over rel-1 in grp-berlin, stage 0 started at STARTED; by
    default the even devices' jobs are confirmed (they soaked on rel-2), the odd ones pending."""
    spec = {"stages": [{"name": "canary", "percent": 50, "soak_seconds": 600}]}
    if gate is not None:
        spec["gate"] = gate
    ro = rollout(
        "ro-1",
        group_id="grp-berlin",
        release_id="rel-2",
        previous_release_id="rel-1",
        state="running",
        spec=spec,
    )
    with db.storage.begin() as uow:
        uow.groups.put(DeviceGroup("grp-berlin", "berlin", GroupKind.TAG, "site=berlin"))
        uow.releases.create(release("rel-1", 1))
        uow.releases.create(release("rel-2", 2))
        ro = uow.rollouts.create(ro)
        uow.rollouts.put_stage(RolloutStage("ro-1", 0, "running", 10, started_at=STARTED))
    plan_jobs(db.storage, halves() if jobs is None else jobs)
    return ro


def ingest_fleet(
    db: Db,
    *,
    devices: int = 20,
    batches: int = 5,
    canary_latency: float = 2000.0,
    canary_score: float = 0.9,
    outsider_release: str = "rel-2",
) -> None:
    fleet = Fleet()
    rng = random.Random(7)
    for b in range(batches):
        fleet.clock_ms = T0_MS + b * 60_000
        for d in range(devices):
            canary = d % 2 == 0
            fleet.send(
                fleet.batch(
                    f"dev-{d}",
                    "rel-2" if canary else "rel-1",
                    n=20,
                    latency=canary_latency if canary else 2000.0,
                    score=canary_score if canary else 0.9,
                    rng=rng,
                )
            )
        # A device outside the group on the new release, regressed badly: not in the cohorts.
        fleet.send(fleet.batch("outsider", outsider_release, n=20, latency=50_000, score=0.1))
    members = {f"dev-{d}": ("grp-berlin",) for d in range(devices)}
    worker = IngestWorker(fleet.source, db.store, groups_of=lambda dev: members.get(dev, ()))
    worker.drain()


def test_a_regressed_model_fails_with_the_policy_action(db: Db) -> None:
    ro = setup_rollout(db)
    ingest_fleet(db, canary_latency=3000.0, canary_score=0.8)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)
    assert result is not None and result.verdict is Verdict.FAIL
    assert result.action is FailureAction.ROLLBACK
    assert "latency-p95" in result.reason and "confidence-mean" in result.reason
    assert len(result.reason) <= 80 and result.numbers["latency-p95.p"] < 0.01
    history = db.store.verdicts("ro-1")
    assert [(v["stage"], v["verdict"]) for v in history] == [(0, "fail")]
    numbers = history[0]["numbers"]
    assert numbers["canary_devices"] == 10 and numbers["canary_inferences"] == 1000
    assert numbers["control_devices"] == 10 and numbers["latency-p95.effect"] > 0.2
    assert history[0]["metrics"]["outcome"] == "fail" and "latency-p95" in history[0]["reason"]


def test_an_equal_model_passes(db: Db) -> None:
    ro = setup_rollout(db)
    ingest_fleet(db)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)
    assert result is not None and result.verdict is Verdict.PASS, result.reason
    assert result.action is None


def test_too_few_samples_wait(db: Db) -> None:
    ro = setup_rollout(db)
    ingest_fleet(db, devices=6, batches=1, canary_latency=3000.0)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)
    assert result is not None and result.verdict is Verdict.WAIT
    assert "too few samples" in result.reason


def test_telemetry_before_the_stage_started_is_not_counted(db: Db) -> None:
    ro = setup_rollout(db)
    ingest_fleet(db, canary_latency=3000.0, canary_score=0.8)
    with db.storage.begin() as uow:
        uow.rollouts.put_stage(RolloutStage("ro-1", 0, "running", 10, started_at=NOW))
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW + timedelta(minutes=1))
    assert result is not None and result.verdict is Verdict.WAIT
    assert result.numbers["canary_inferences"] == 0


def test_no_gate_or_unstarted_stage_gives_none(db: Db) -> None:
    ro = setup_rollout(db, gate=None)
    assert TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW) is None
    assert TelemetryGate(db.store, db.storage).evaluate(ro, 3, NOW) is None


def test_an_unchanged_verdict_is_stored_once(db: Db) -> None:
    # The history holds decisions and changes: a PASS repeated every tick (and past a minute)
    # is one row, so the row shown is the one the stage moved on.
    ro = setup_rollout(db)
    ingest_fleet(db)
    gate = TelemetryGate(db.store, db.storage)
    for seconds in (0, 10, 20, 70, 140):
        gate.evaluate(ro, 0, NOW + timedelta(seconds=seconds))
    assert [v["verdict"] for v in db.store.verdicts("ro-1")] == ["pass"]


def test_the_last_stage_compares_with_the_control_seen_since_the_rollout_started(db: Db) -> None:
    # By the last stage every device runs the new release within seconds of the stage start:
    # the control must come from earlier in the rollout, or the gate waits for ever.
    stage_1 = {f"dev-{d}": (1, "confirmed") for d in range(1, 20, 2)}
    ro = setup_rollout(db, jobs={**halves(), **stage_1})
    with db.storage.begin() as uow:
        ro = uow.rollouts.get("ro-1")
        started = {**ro.state_data, "started_at": STARTED.isoformat()}
        ro = uow.rollouts.save(replace(ro, state_data=started), ro.revision)
    last_started = datetime.fromtimestamp(T0_MS / 1000, tz=UTC) + timedelta(minutes=8)
    with db.storage.begin() as uow:
        uow.rollouts.put_stage(RolloutStage("ro-1", 1, "running", 10, started_at=last_started))
    fleet, rng = Fleet(), random.Random(11)
    for minute in (*range(5), *range(10, 15)):  # stage 0, then the last stage from minute 8
        fleet.clock_ms = T0_MS + minute * 60_000
        for d in range(20):
            release_id = "rel-2" if minute >= 10 or d % 2 == 0 else "rel-1"
            fleet.send(fleet.batch(f"dev-{d}", release_id, n=20, rng=rng))
    members = {f"dev-{d}": ("grp-berlin",) for d in range(20)}
    IngestWorker(fleet.source, db.store, groups_of=lambda dev: members.get(dev, ())).drain()
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 1, NOW)
    assert result is not None and result.verdict is Verdict.PASS, result.reason
    numbers = db.store.verdicts("ro-1")[-1]["numbers"]
    assert numbers["control_devices"] == 10 and numbers["canary_devices"] == 20


def test_a_duty_bounded_gate_answers_from_its_last_judgement_until_its_cost_is_paid(
    db: Db,
) -> None:
    """With `duty`, a stage judged at `now` is judged again only once `took / duty` has passed
    on the engine's clock; in between the engine gets the stored answer. Without telemetry the
    stage WAITs; telemetry arriving right after is seen at the next due judgement, not before."""
    ro = setup_rollout(db)
    gate = TelemetryGate(db.store, db.storage, duty=0.01)
    first = gate.evaluate(ro, 0, NOW)
    assert first is not None and first.verdict is Verdict.WAIT
    ingest_fleet(db, canary_latency=3000.0, canary_score=0.8)
    assert gate.evaluate(ro, 0, NOW) is first  # not due: the stored answer
    later = gate.evaluate(ro, 0, NOW + timedelta(hours=1))
    assert later is not None and later.verdict is Verdict.FAIL
    assert TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW).verdict is Verdict.FAIL
    with pytest.raises(ValueError, match="duty"):
        TelemetryGate(db.store, db.storage, duty=0.0)
