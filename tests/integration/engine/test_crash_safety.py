"""The engine and dispatcher survive a crash at every step boundary of a 20-device, two-stage
rollout, on in-memory storage, SQLite and PostgreSQL (`conftest.py`), with the invariants
checked after every step."""

from __future__ import annotations

import pytest

from service.storage import Storage
from tests.integration.engine._world import _RANK, FINAL, World

BOUNDARIES = (
    "tick.lease",
    "tick.loaded",
    "tick.twins",
    "tick.before-commit",
    "tick.committed",
    "dispatch.claimed",
    "dispatch.executed",
    "dispatch.marked",
)


def drive(world: World, max_steps: int = 120) -> None:
    """Step the world until the rollout is final, checking the invariants after each step."""
    last_rank: dict[str, int] = {}
    last = world.rollout_state()
    for _ in range(max_steps):
        world.step()
        state, stage, version = world.rollout_state()
        assert stage >= last[1] and version >= last[2], "rollout progress went back"
        last = (state, stage, version)
        jobs = world.jobs()
        assert len(jobs) == world.devices, "a job was lost or duplicated"
        for device, job_state in jobs.items():
            rank = _RANK[job_state]  # type: ignore[index]
            assert rank >= last_rank.get(device, 0), f"{device} went back to {job_state}"
            last_rank[device] = rank
        for device in world.fleet.ids:
            desired = world.hub.desired(device).get("tinyfleet", {}).get("service", {})
            workflow = desired.get("workflow") or {}
            if workflow.get("action") == 3:
                release = workflow["id"].split(".")[1]
                assert world.director.assigned.get(device) == release, (
                    f"{device} offered {release} without matching director metadata"
                )
        if state in FINAL:
            break
    # Drain what the last tick emitted (notices, revocations), as a running service would.
    for _ in range(100):
        world.step()
        with world.storage.begin(readonly=True) as uow:
            if uow.outbox.pending() == 0:
                break


def check_completed(world: World) -> None:
    state, stage, _ = world.rollout_state()
    assert (state, stage) == ("completed", 1)
    jobs = world.jobs()
    bad = world.fleet.bad
    assert {d for d, s in jobs.items() if s == "rejected"} == bad
    confirmed = {d for d, s in jobs.items() if s == "confirmed"}
    # every device that reported the release active is counted, once, as confirmed
    assert confirmed == world.fleet.acked == set(world.fleet.ids) - bad
    for device in world.fleet.ids:
        # one desired write per workflow: a repeated dispatch never rewrote an offer
        writes = world.hub.get_twin(device).desired_version - 1
        assert writes == len(world.fleet.seen.get(device, ()))
    kinds = [n.kind for n in world.notifier.notices.values()]
    assert kinds.count("completed") == 1 and kinds.count("started") == 1
    with world.storage.begin(readonly=True) as uow:
        assert uow.outbox.pending() == 0


def test_rollout_completes_without_crashes(storage: Storage) -> None:
    world = World(storage)
    drive(world)
    check_completed(world)
    assert not world.crashes


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_crash_at_each_boundary_is_harmless(storage: Storage, boundary: str) -> None:
    world = World(storage, crash_at={boundary})
    drive(world)
    assert world.crashes[boundary] == 1
    check_completed(world)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashes_at_random_boundaries_still_complete(storage: Storage, seed: int) -> None:
    world = World(storage, crash_rate=0.06, seed=seed)
    drive(world, max_steps=400)
    assert sum(world.crashes.values()) >= 10
    assert len(world.crashes) >= 5, f"too few kinds of boundary were hit: {world.crashes}"
    check_completed(world)


def test_failure_threshold_aborts_and_revokes_offers(storage: Storage) -> None:
    world = World(storage, bad_in_rest=8, crash_rate=0.06, seed=4)
    drive(world)
    state, stage, _ = world.rollout_state()
    assert (state, stage) == ("aborted", 1)
    jobs = world.jobs()
    assert "pending" not in jobs.values() and "offered" not in jobs.values()
    for device, job_state in jobs.items():
        workflow = world.hub.desired(device).get("tinyfleet", {}).get("service", {})
        workflow = workflow.get("workflow") or {}
        if job_state == "cancelled" and workflow:
            assert workflow["action"] == 255, f"{device}'s cancelled offer was not revoked"
            assert device not in world.director.assigned
    kinds = [n.kind for n in world.notifier.notices.values()]
    assert kinds.count("failure-abort") == 1
    with world.storage.begin(readonly=True) as uow:
        assert uow.outbox.pending() == 0
