"""The gate per model slot over stored telemetry: two cores, two models, judged apart.

Core m4-0 runs a keyword classifier (score = confidence, higher is better), core m4-1 a
vibration anomaly model (score = reconstruction error, higher is worse). Pooled over both cores,
a release that regresses both models cancels out in the confidence test, and one that regresses
one model is diluted by the other; per slot, both are caught and named. Each regression test
also checks that the pooled gate (what `TelemetryGate` evaluated before) misses it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from device_agent.protocol.telemetry import EventRecord, InferenceRecord, TelemetryBatch
from service.domain.gates import Outcome, evaluate_gate
from service.domain.rollout_events import Verdict
from service.domain.spec import FailureAction
from service.telemetry import IngestWorker, TelemetryGate
from service.telemetry._gate import gate_policy
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db
from tests.integration.telemetry.test_gate import NOW, STARTED, setup_rollout


@dataclass(frozen=True)
class Model:
    core: str
    model_id: str
    score: float
    latency: float = 2000.0
    anomaly_rate: float | None = None  # None: the model reports no anomaly flag
    labels: tuple[str, ...] = ()


KWS = Model("m4-0", "kws", 0.9, labels=("yes", "no", "up"))
VIBRATION = Model("m4-1", "vibration", 0.3, anomaly_rate=0.05)
VERSIONS = {"rel-1": "1.0.0", "rel-2": "2.0.0"}


def batch(
    fleet: Fleet,
    device: str,
    release: str,
    models: tuple[Model, ...],
    rng: random.Random,
    events: tuple[EventRecord, ...] = (),
) -> TelemetryBatch:
    rows = []
    for model in models:
        for i in range(20):
            rows.append(
                InferenceRecord(
                    core=model.core,
                    model_id=model.model_id,
                    model_version=VERSIONS.get(release, "1.0.0"),
                    ts_ms=fleet.clock_ms + i,
                    latency_us=max(1, int(rng.gauss(model.latency, model.latency * 0.1))),
                    score=round(min(1.0, max(0.0, rng.gauss(model.score, 0.03))), 5),
                    label=rng.choice(model.labels) if model.labels else None,
                    anomaly=None
                    if model.anomaly_rate is None
                    else rng.random() < model.anomaly_rate,
                )
            )
    seq = fleet.seq.get(device, 0)
    fleet.seq[device] = seq + 1
    return TelemetryBatch(device, seq, release, tuple(rows), (), events)


def ingest(
    db: Db,
    canary: tuple[Model, ...],
    control: tuple[Model, ...] = (KWS, VIBRATION),
    *,
    devices: int = 20,
    batches: int = 5,
    canary_events: tuple[EventRecord, ...] = (),
) -> None:
    """Even devices run rel-2 (the canary's models), odd ones rel-1; 1000 rows per model and
    cohort with the defaults."""
    fleet = Fleet()
    rng = random.Random(5)
    for b in range(batches):
        fleet.clock_ms = T0_MS + b * 60_000
        for d in range(devices):
            new = d % 2 == 0
            models = canary if new else control
            release, events = ("rel-2", canary_events) if new else ("rel-1", ())
            fleet.send(batch(fleet, f"dev-{d}", release, models, rng, events if b == 0 else ()))
    members = {f"dev-{d}": ("grp-berlin",) for d in range(devices)}
    worker = IngestWorker(fleet.source, db.store, groups_of=lambda dev: members.get(dev, ()))
    worker.drain()


def pooled_outcome(db: Db, ro: object) -> Outcome:
    """What the gate said before it split by model: one verdict over both cores."""
    policy = gate_policy(ro, 0)  # type: ignore[arg-type]
    assert policy is not None
    canary = db.store.cohort("grp-berlin", "rel-2", STARTED)
    control = db.store.cohort("grp-berlin", "rel-1", STARTED)
    return evaluate_gate(policy, canary, control).outcome


def test_a_release_that_regresses_both_models_fails(db: Db) -> None:
    ro = setup_rollout(db)
    # kws confidence drops by 0.1; the vibration model's error rises by 0.1: pooled, the mean
    # score is unchanged and the rank test sees no shift.
    worse_kws = Model("m4-0", "kws", 0.8, labels=KWS.labels)
    worse_vibration = Model("m4-1", "vibration", 0.4, anomaly_rate=0.05)
    ingest(db, (worse_kws, worse_vibration))
    assert pooled_outcome(db, ro) is not Outcome.FAIL

    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.FAIL, result
    assert result.action is FailureAction.ROLLBACK
    assert result.reason.startswith("m4-0/kws: confidence-mean")
    assert len(result.reason) <= 80 and len(result.numbers) <= 3
    assert result.numbers["confidence-mean.p"] <= 0.005  # alpha 0.01 split over two slots

    [stored] = db.store.verdicts("ro-1")
    assert stored["verdict"] == "fail" and stored["reason"].startswith("m4-0/kws confidence-mean")
    document = stored["metrics"]
    assert document["outcome"] == "fail" and document["decisive"] == "m4-0/kws"
    assert document["alpha"] == 0.01 and document["pair_alpha"] == 0.005
    pairs = {(p["core"], p["model_id"]): p for p in document["pairs"]}
    assert set(pairs) == {("m4-0", "kws"), ("m4-1", "vibration")}
    assert pairs["m4-0", "kws"]["canary_versions"] == ["2.0.0"]
    assert pairs["m4-0", "kws"]["control_versions"] == ["1.0.0"]
    kws = {m["metric"]: m for m in pairs["m4-0", "kws"]["verdict"]["metrics"]}
    assert kws["confidence-mean"]["status"] == "fail"
    assert kws["confidence-mean"]["canary"] == pytest.approx(0.8, abs=0.01)
    numbers = stored["numbers"]
    assert numbers["m4-0/kws.confidence-mean.effect"] == pytest.approx(0.1, abs=0.01)
    assert numbers["canary_inferences"] == 2000 and numbers["canary_devices"] == 10
    assert numbers["pairs"] == 2


@pytest.mark.parametrize(
    ("regressed", "metric"),
    [
        # a drop of 0.07 on one core is 0.035 pooled: within the 0.05 limit
        (Model("m4-0", "kws", 0.83, labels=KWS.labels), "confidence-mean"),
        (Model("m4-1", "vibration", 0.3, anomaly_rate=0.2), "anomaly-rate"),
    ],
    ids=["kws-diluted", "vibration"],
)
def test_one_regressed_model_fails_naming_its_core_and_model(
    db: Db, regressed: Model, metric: str
) -> None:
    ro = setup_rollout(db)
    canary = tuple(regressed if m.core == regressed.core else m for m in (KWS, VIBRATION))
    ingest(db, canary)
    if regressed.model_id == "kws":
        assert pooled_outcome(db, ro) is not Outcome.FAIL
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.FAIL, result
    label = f"{regressed.core}/{regressed.model_id}"
    assert result.reason.startswith(f"{label}: {metric}") and "|" not in result.reason
    assert list(result.numbers) == [f"{metric}.p"]
    [stored] = db.store.verdicts("ro-1")
    assert stored["metrics"]["decisive"] == label
    other = {p["model_id"]: p for p in stored["metrics"]["pairs"]}
    healthy = "vibration" if regressed.model_id == "kws" else "kws"
    assert other[healthy]["verdict"]["outcome"] == "pass"


def test_equal_models_pass(db: Db) -> None:
    ro = setup_rollout(db)
    ingest(db, (KWS, VIBRATION))
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    assert result is not None
    assert result.verdict is Verdict.PASS, result.reason
    assert result.reason == "every model within its limits (2 judged)"
    assert result.action is None


def test_too_few_samples_wait_naming_the_slots(db: Db) -> None:
    ro = setup_rollout(db)
    ingest(db, (Model("m4-0", "kws", 0.5, labels=KWS.labels), VIBRATION), devices=6, batches=1)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.WAIT
    assert result.reason == "too few samples: m4-0/kws, m4-1/vibration"
    assert result.numbers == {"canary_inferences": 120.0, "canary_devices": 3.0}


def test_a_model_new_on_its_core_waits_for_a_baseline(db: Db) -> None:
    """No old model of that id ran on the core: nothing to compare with, so no PASS."""
    ro = setup_rollout(db)
    gesture = Model("m4-1", "gesture", 0.9, labels=("left", "right"))
    ingest(db, (KWS, gesture))
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.WAIT
    assert "m4-1/gesture" in result.reason
    [stored] = db.store.verdicts("ro-1")
    assert [p["model_id"] for p in stored["metrics"]["pairs"]] == ["kws", "gesture"]
    assert "m4-1/gesture" in stored["reason"] and "control: 0 of 500" in stored["reason"]


def test_reverts_on_one_core_count_against_that_core_s_model(db: Db) -> None:
    ro = setup_rollout(db)
    revert = EventRecord(T0_MS, "revert", "m4-1", None, 1, "selftest failed")
    ingest(db, (KWS, VIBRATION), canary_events=(revert,))
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.FAIL, result
    assert result.reason == "m4-1/vibration: revert-rate 1 > 0.05"
    [stored] = db.store.verdicts("ro-1")
    pairs = {p["model_id"]: p["verdict"] for p in stored["metrics"]["pairs"]}
    kws_reverts = {m["metric"]: m for m in pairs["kws"]["metrics"]}["revert-rate"]
    assert kws_reverts["canary"] == 0.0 and pairs["kws"]["outcome"] == "pass"
