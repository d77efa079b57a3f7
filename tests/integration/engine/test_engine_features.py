"""The engine's rollback, group joiners, returning devices and health gates, end to end through
the hub port with simulated devices, on memory, SQLite and PostgreSQL storage."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from service.domain.gates import GatePolicy
from service.domain.rollout_events import Abort, GateResult, Resume, Rollback, Start, Verdict
from service.domain.spec import DeadlinePolicy, FailureAction, RetryPolicy
from service.engine import AuditNote, MemoryHealthGate
from service.storage import Storage, open_storage
from tests.integration.engine._world import Crash, World, spec

GATED = GatePolicy(stage="every")


def _stage(world: World) -> int:
    return world.rollout_state()[1]


def _run_to_stage(world: World, stage: int, max_steps: int = 100) -> None:
    for _ in range(max_steps):
        if _stage(world) >= stage:
            return
        world.step()
    raise AssertionError(f"stage {stage} never started: {world.rollout_state()}")


def _drain(world: World) -> None:
    for _ in range(50):
        world.step()
        with world.storage.begin(readonly=True) as uow:
            if uow.outbox.pending() == 0:
                return
    raise AssertionError("the outbox never drained")


def _check_rolled_back(world: World) -> None:
    _drain(world)
    forward, back = world.jobs("rel-1"), world.jobs("rel-0")
    live = {"pending", "offered", "downloading", "verifying", "transferring", "soaking"}
    assert not live & set(forward.values()), forward
    assert back, "nobody was rolled back"
    assert set(back.values()) == {"confirmed"}, back
    for device in world.fleet.ids:
        assert world.fleet.installed.get(device, "rel-0") == "rel-0", device
    for device in back:
        assert world.director.assigned.get(device) == "rel-0", device
    kinds = [n.kind for n in world.notifier.notices.values()]
    assert kinds.count("rolled-back") == 1


def test_operator_rollback_sends_every_activated_device_back(storage: Storage) -> None:
    world = World(storage, bad_in_rest=0)
    _run_to_stage(world, 1)
    for _ in range(3):  # the rest is under way: some offered, the canaries confirmed
        world.step()
    activated = {d for d, s in world.jobs().items() if s in ("activating", "soaking", "confirmed")}
    world.command(Rollback("bob", "model regressed"))
    assert world.rollout_state()[0] == "rolling_back"
    assert world.run_until({"rolled_back"}) == "rolled_back"
    _check_rolled_back(world)
    assert activated <= set(world.jobs("rel-0"))


def test_failure_action_rollback(storage: Storage) -> None:
    world = World(storage, bad_in_rest=8, spec=spec(FailureAction.ROLLBACK))
    assert world.run_until({"rolled_back", "completed", "aborted"}) == "rolled_back"
    _check_rolled_back(world)
    assert {d for d, s in world.jobs().items() if s == "rejected"} <= world.fleet.bad


def test_devices_joining_mid_rollout_and_after_completion_get_the_release(
    storage: Storage,
) -> None:
    world = World(storage, bad_in_rest=0)
    world.step()
    world.join("late-1")
    world.step()
    assert "late-1" in world.jobs()  # planned in by the tick after it joined
    assert world.run_until({"completed"}) == "completed"
    world.join("late-2")
    for _ in range(15):
        world.step()
    jobs = world.jobs()
    assert jobs["late-1"] == "confirmed" and jobs["late-2"] == "confirmed"
    assert world.fleet.installed["late-2"] == "rel-1"
    with world.storage.begin(readonly=True) as uow:
        assert uow.jobs.get("ro-1", "late-2").stage == 1  # the last stage, once completed


def test_an_offline_device_catches_up_when_it_returns(storage: Storage) -> None:
    world = World(storage, bad_in_rest=0)
    with world.storage.begin(readonly=True) as uow:
        rest = [j.device_id for j in uow.jobs.list("ro-1", limit=100).items if j.stage == 1]
    away = rest[0]  # a canary offline would hold the canary stage below its 80% threshold
    world.fleet.offline.add(away)
    _run_to_stage(world, 1)
    for _ in range(15):
        world.step()
    assert world.jobs()[away] in ("pending", "offered")  # kept, not timed out
    world.fleet.offline.discard(away)
    assert world.run_until({"completed"}) == "completed"  # 80% were enough to complete
    for _ in range(15):  # a completed rollout still watches its live jobs
        world.step()
    assert world.jobs()[away] == "confirmed"
    assert world.fleet.installed[away] == "rel-1"


def test_gate_wait_keeps_soaking_and_pass_advances(storage: Storage) -> None:
    gate = MemoryHealthGate()
    world = World(storage, bad_in_rest=0, gates=gate, spec=spec(gate=GATED, require_gate=True))
    world.run_until({"soaking"})
    gate.set("ro-1", GateResult(0, Verdict.WAIT, "not enough inferences"))
    for _ in range(30):  # far past the 5-minute soak
        world.step()
    assert world.rollout_state()[:2] == ("soaking", 0)
    assert ("ro-1", 0) in gate.asked
    gate.set("ro-1", GateResult(0, Verdict.PASS, "healthy"))
    _run_to_stage(world, 1)
    gate.set("ro-1", GateResult(1, Verdict.PASS, "healthy"))
    assert world.run_until({"completed"}) == "completed"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (None, "paused"),  # the spec's failure action (pause)
        (FailureAction.ABORT, "aborted"),
        (FailureAction.ROLLBACK, "rolled_back"),
    ],
)
def test_gate_fail_trips_the_rollout(
    storage: Storage, action: FailureAction | None, expected: str
) -> None:
    gate = MemoryHealthGate()
    world = World(storage, bad_in_rest=0, gates=gate, spec=spec(FailureAction.PAUSE, gate=GATED))
    world.run_until({"soaking"})
    gate.set("ro-1", GateResult(0, Verdict.FAIL, "latency up 40%", {"p95": 1.4}, action))
    final = {"paused", "aborted", "rolling_back"}
    assert world.run_until(final) == ("rolling_back" if expected == "rolled_back" else expected)
    if expected == "rolled_back":
        assert world.run_until({"rolled_back"}) == "rolled_back"
        _check_rolled_back(world)
    with world.storage.begin(readonly=True) as uow:
        assert "health gate failed: latency up 40%" in uow.rollouts.get("ro-1").state_data["reason"]
    if expected == "paused":
        world.command(Resume("alice"))  # acknowledges the verdict: it does not trip again
        for _ in range(3):
            world.step()
        assert world.rollout_state()[0] in ("running", "soaking")


def test_an_operator_command_and_its_audit_entry_commit_together() -> None:
    """A crash before the command's unit commits leaves neither the change nor its entry; the
    command that commits leaves both, chained."""
    world = World(open_storage("memory:"), start=False, crash_at={"tick.before-commit"})
    note = AuditNote("alice", "rollout.start", {"reason": "go"})
    with pytest.raises(Crash):
        world.engine.command("ro-1", Start("alice"), world.now, audit=note)
    with world.storage.begin(readonly=True) as uow:
        assert uow.rollouts.get("ro-1").state == "draft"
        assert uow.audit.entries() == []
    world.engine.command("ro-1", Start("alice"), world.now, audit=note)
    with world.storage.begin(readonly=True) as uow:
        assert uow.rollouts.get("ro-1").state != "draft"
        (entry,) = uow.audit.entries()
        assert (entry.actor, entry.action, entry.subject) == ("alice", "rollout.start", "ro-1")
        assert entry.details["state"] == uow.rollouts.get("ro-1").state
        assert uow.audit.verify_chain().ok


def test_each_stage_records_when_it_started_and_ended(storage: Storage) -> None:
    world = World(storage)
    world.run_until({"completed"})
    with storage.begin(readonly=True) as uow:
        stages = uow.rollouts.stages("ro-1")
    assert [s.index for s in stages] == [0, 1]
    assert all(s.started_at is not None and s.ended_at is not None for s in stages)
    first, rest = stages
    assert first.started_at <= first.ended_at <= rest.started_at <= rest.ended_at  # type: ignore[operator]
    assert first.planned + rest.planned == world.devices
    assert {s.state for s in stages} == {"done"}


def test_offline_canaries_time_out_and_the_stage_stalls_with_its_reason(storage: Storage) -> None:
    # Before: an OFFERED job had no deadline, so two offline canaries held the canary stage
    # below its 80% threshold for ever, silently.
    stalls = replace(
        spec(),
        retry=RetryPolicy(offer_timeout=timedelta(minutes=10), max_retries=0),
        deadlines=DeadlinePolicy(action=FailureAction.PAUSE),
    )
    world = World(storage, bad_in_rest=0, spec=stalls)
    with world.storage.begin(readonly=True) as uow:
        canary = [j.device_id for j in uow.jobs.list("ro-1", limit=100).items if j.stage == 0]
    world.fleet.offline.update(canary[:2])
    assert world.run_until({"paused"}, max_steps=60) == "paused"
    assert {world.jobs()[d] for d in canary[:2]} == {"timed_out"}
    with world.storage.begin(readonly=True) as uow:
        reason = uow.rollouts.get("ro-1").state_data["reason"]
    assert reason.startswith("stage canary cannot succeed: 2 of 4 devices confirmed")
    _drain(world)
    assert any(n.kind == "stalled-pause" for n in world.notifier.notices.values())


def _activating(world: World) -> set[str]:
    """Run into the second stage until some devices are activating; those devices."""
    _run_to_stage(world, 1)
    for _ in range(20):
        if "activating" in world.jobs().values():
            break
        world.step()
    return {d for d, state in world.jobs().items() if state == "activating"}


def test_an_abort_while_devices_activate_waits_for_them_to_revert(storage: Storage) -> None:
    # Before, an abort cancelled an activating job at once: the device finished the install and
    # stayed on the aborted release. Now the job waits CANCELLING for the device's `reverted`.
    world = World(storage, bad_in_rest=0)
    activating = _activating(world)
    assert activating, world.jobs()
    world.command(Abort("alice", "stop"))
    assert {world.jobs()[d] for d in activating} == {"cancelling"}
    world.dispatcher.run_once(world.now)  # the cancel reaches the devices before they finish
    world.step()
    assert {world.jobs()[d] for d in activating} == {"cancelled"}
    for device in activating:
        assert world.fleet.installed.get(device, "rel-0") == "rel-0", device


def test_a_device_that_finished_before_the_cancel_reached_it_is_rolled_back(
    storage: Storage,
) -> None:
    world = World(storage, bad_in_rest=0)
    activating = _activating(world)
    world.command(Abort("alice", "stop"))
    world.step()  # the devices install before the revoke is written: too late
    assert {world.jobs()[d] for d in activating} == {"failed"}
    world.command(Rollback("alice", "undo"))
    _drain(world)
    for _ in range(10):
        world.step()
    back = world.jobs("rel-0")
    assert activating <= set(back), back  # each of them got a rollback job
    for device in activating:
        assert world.fleet.installed[device] == "rel-0", device
