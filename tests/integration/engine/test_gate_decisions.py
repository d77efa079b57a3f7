"""The verdict that decided a stage is stored with the stage and shown in the rollout view
(issue 12: the verdict shown was the last one recorded, not the one that advanced the stage)."""

from __future__ import annotations

from service.api._views import rollout_out
from service.domain.gates import GatePolicy
from service.domain.rollout_events import GateResult, NextStage, Verdict
from service.domain.spec import FailureAction
from service.engine import MemoryHealthGate
from service.storage import Storage
from tests.integration.engine._world import World, spec

GATED = GatePolicy(stage="every")


def cohorts(canary: int, stage_devices: int) -> dict[str, float]:
    return {
        "canary_devices": float(canary),
        "control_devices": 15.0,
        "canary_inferences": 40.0 * canary,
        "control_inferences": 600.0,
        "stage_devices": float(stage_devices),
        "stage_soaked": float(stage_devices),
    }


def stage_gate(world: World, index: int) -> object:
    with world.storage.begin(readonly=True) as uow:
        stages = {s.index: s for s in uow.rollouts.stages("ro-1")}
    return stages[index].data.get("gate") if index in stages else None


def test_the_pass_a_stage_advanced_on_is_stored_with_it_and_shown(storage: Storage) -> None:
    gate = MemoryHealthGate()
    world = World(storage, bad_in_rest=0, gates=gate, spec=spec(gate=GATED, require_gate=True))
    world.run_until({"soaking"})
    early = GateResult(0, Verdict.PASS, "every model within its limits", cohorts=cohorts(1, 2))
    gate.set("ro-1", early)
    world.step()
    assert world.rollout_state()[:2] == ("soaking", 0)  # the soak is not over yet
    assert stage_gate(world, 0) is None  # a PASS alone decides nothing
    # The verdict changes its numbers but not its outcome (the rollout's gate stays PASS):
    # the one the stage moves on is the later one.
    deciding = GateResult(
        0, Verdict.PASS, "every model within its limits", {"n": 3.0}, cohorts=cohorts(3, 2)
    )
    gate.set("ro-1", deciding)
    for _ in range(30):
        if world.rollout_state()[1] == 1:
            break
        world.step()
    assert world.rollout_state()[1] == 1
    stored = stage_gate(world, 0)
    assert isinstance(stored, dict)
    assert stored["verdict"] == "pass" and stored["decided"] == "advanced"
    assert stored["cohorts"] == cohorts(3, 2) and stored["numbers"] == {"n": 3.0}
    assert stored["required"] is True
    with world.storage.begin(readonly=True) as uow:
        view = rollout_out(uow, uow.rollouts.get("ro-1"))
    shown = view.stages[0].gate
    assert shown is not None and shown.decided == "advanced"
    assert shown.cohorts["canary_devices"] == 3 and shown.cohorts["stage_devices"] == 2
    assert view.stages[1].gate is None


def test_the_fail_that_tripped_a_stage_is_stored_with_it(storage: Storage) -> None:
    gate = MemoryHealthGate()
    world = World(storage, bad_in_rest=0, gates=gate, spec=spec(FailureAction.PAUSE, gate=GATED))
    world.run_until({"soaking"})
    reason = "m4-0/kws: latency-p95 0.4 > 0.2"
    failing = GateResult(0, Verdict.FAIL, reason, {"latency-p95.p": 0.001}, cohorts=cohorts(2, 2))
    gate.set("ro-1", failing)
    assert world.run_until({"paused"}) == "paused"
    stored = stage_gate(world, 0)
    assert isinstance(stored, dict) and stored["decided"] == "tripped"
    assert stored["reason"] == failing.reason and stored["cohorts"] == cohorts(2, 2)


def test_an_operator_s_advance_is_not_stored_as_the_gate_s(storage: Storage) -> None:
    gate = MemoryHealthGate()
    world = World(storage, bad_in_rest=0, gates=gate, spec=spec(gate=GATED, require_gate=True))
    world.run_until({"soaking"})
    gate.set("ro-1", GateResult(0, Verdict.WAIT, "too few samples"))
    world.step()
    world.command(NextStage("alice"))
    assert world.rollout_state()[1] == 1
    assert stage_gate(world, 0) is None
