"""The rollout engine with the real telemetry gate: devices report inference telemetry every
minute through the feed; a regressed model rolls the canary back, an equal model completes."""

from __future__ import annotations

import random

import pytest

from device_agent.protocol.telemetry import InferenceRecord, TelemetryBatch, encode_batch
from service.domain.gates import FailAction, GatePolicy
from service.domain.spec import FailureAction
from service.telemetry import IngestWorker, MemorySource, TelemetryGate
from tests.integration.engine._world import World, spec
from tests.integration.telemetry.conftest import Db

POLICY = GatePolicy(
    stage="canary", alpha=0.01, min_inferences=300, min_devices=3, on_fail=FailAction.ROLLBACK
)


class Telemetry:
    """Every device sends one batch a minute from the release it runs; rel-1 may be slower and
    less confident (the regressed model)."""

    def __init__(self, world: World, db: Db, *, regressed: bool) -> None:
        self.world, self.db, self.regressed = world, db, regressed
        self.source = MemorySource(4)
        self.seq: dict[str, int] = {}
        self.ran_new: set[str] = set()
        self.rng = random.Random(11)
        self.worker = IngestWorker(
            self.source, db.store, groups_of=lambda _d: ("grp-1",), clock=lambda: world.now
        )

    def minute(self) -> None:
        now_ms = int(self.world.now.timestamp() * 1000)
        for device in self.world.fleet.ids:
            release = self.world.fleet.installed.get(device, "rel-0")
            if release == "rel-1":
                self.ran_new.add(device)
            worse = self.regressed and release == "rel-1"
            latency, score = (3000.0, 0.78) if worse else (2000.0, 0.9)
            rows = tuple(
                InferenceRecord(
                    "m4-0",
                    "kws",
                    release,
                    now_ms + i,
                    max(1, int(self.rng.gauss(latency, 200))),
                    round(min(1.0, max(0.0, self.rng.gauss(score, 0.05))), 5),
                    self.rng.choice(("yes", "no")),
                )
                for i in range(40)
            )
            seq = self.seq[device] = self.seq.get(device, -1) + 1
            body = encode_batch(TelemetryBatch(device, seq, release, rows))
            self.source.append(device, body, enqueued_ms=now_ms)
        self.worker.drain()

    def run_until(self, states: set[str], max_steps: int = 120) -> str:
        for _ in range(max_steps):
            state = self.world.rollout_state()[0]
            if state in states:
                return state
            self.world.step()
            self.minute()
        raise AssertionError(f"still {self.world.rollout_state()} after {max_steps} steps")


@pytest.mark.parametrize("regressed", [True, False], ids=["regressed", "equal"])
def test_the_engine_acts_on_stored_telemetry(db: Db, regressed: bool) -> None:
    gate = TelemetryGate(db.store, db.storage)
    world = World(
        db.storage,
        bad_in_rest=0,
        gates=gate,
        spec=spec(FailureAction.PAUSE, gate=POLICY, require_gate=True),
    )
    telemetry = Telemetry(world, db, regressed=regressed)
    final = telemetry.run_until({"rolling_back", "rolled_back", "completed", "paused", "aborted"})
    verdicts = db.store.verdicts("ro-1")
    if regressed:
        assert final in ("rolling_back", "rolled_back")
        assert verdicts[-1]["verdict"] == "fail" and verdicts[-1]["stage"] == 0
        assert "latency-p95" in verdicts[-1]["reason"]
        assert telemetry.run_until({"rolled_back"}) == "rolled_back"
        assert 0 < len(telemetry.ran_new) <= 4  # only the canary stage ever ran the new model
        assert set(world.fleet.installed.values()) <= {"rel-0"}
    else:
        assert final == "completed"
        assert {v["verdict"] for v in verdicts} <= {"wait", "pass"}
        assert [v["verdict"] for v in verdicts if v["stage"] == 0][-1] == "pass"
        # every stage advanced on a PASS judged on its own soaked devices, stored with it
        with db.storage.begin(readonly=True) as uow:
            stages = uow.rollouts.stages("ro-1")
        assert stages and all(s.data.get("gate") for s in stages), stages
        for stage in stages:
            decided = stage.data["gate"]
            assert decided["verdict"] == "pass" and decided["decided"] == "advanced"
            cohorts = decided["cohorts"]
            assert cohorts["stage_soaked"] >= min(POLICY.min_devices, cohorts["stage_devices"])
            assert cohorts["canary_devices"] >= cohorts["stage_soaked"]
