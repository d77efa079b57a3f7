"""Rollouts (optimistic concurrency), stages and device jobs on every storage adapter."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from service.storage import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    RevisionConflictError,
    RolloutStage,
    Storage,
)
from tests.contract.storage.factories import T0, device, job, release, rollout, seed_rollout


def test_create_stores_revision_one(storage: Storage) -> None:
    with storage.begin() as uow:
        created = seed_rollout(uow)
    with storage.begin(readonly=True) as uow:
        stored = uow.rollouts.get("ro-1")
    assert created.revision == stored.revision == 1
    assert stored == replace(rollout(), revision=1)


def test_create_refuses_duplicates_and_missing_references(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow)
        with pytest.raises(AlreadyExistsError):
            uow.rollouts.create(rollout())
        with pytest.raises(NotFoundError, match="group"):
            uow.rollouts.create(rollout("ro-2", group_id="nope"))
        with pytest.raises(NotFoundError, match="release"):
            uow.rollouts.create(rollout("ro-3", release_id="nope"))
        with pytest.raises(NotFoundError, match="release"):
            uow.rollouts.create(rollout("ro-4", previous_release_id="nope"))
        uow.releases.create(release("rel-0", counter=0))
        assert uow.rollouts.create(rollout("ro-5", previous_release_id="rel-0")).revision == 1


def test_save_bumps_the_revision(storage: Storage) -> None:
    with storage.begin() as uow:
        created = seed_rollout(uow)
    later = T0 + timedelta(minutes=5)
    with storage.begin() as uow:
        saved = uow.rollouts.save(
            replace(created, state="running", state_data={"stage": 0}, updated_at=later), 1
        )
    assert saved.revision == 2
    with storage.begin(readonly=True) as uow:
        stored = uow.rollouts.get("ro-1")
    assert stored == saved
    assert (stored.state, stored.state_data, stored.updated_at) == ("running", {"stage": 0}, later)


def test_a_stale_save_raises_a_revision_conflict_and_changes_nothing(storage: Storage) -> None:
    with storage.begin() as uow:
        first = seed_rollout(uow)
        uow.rollouts.save(replace(first, state="running"), 1)
    with storage.begin() as uow:
        with pytest.raises(RevisionConflictError) as raised:
            uow.rollouts.save(replace(first, state="aborted"), 1)
        assert (raised.value.expected, raised.value.actual) == (1, 2)
        assert uow.rollouts.get("ro-1").state == "running"


def test_saving_a_missing_rollout_is_not_found(storage: Storage) -> None:
    with storage.begin() as uow, pytest.raises(NotFoundError):
        uow.rollouts.save(rollout("ghost"), 1)


def test_list_by_state_and_group(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow)
        uow.rollouts.create(rollout("ro-2", state="running", created_at=T0 + timedelta(1)))
        assert [r.id for r in uow.rollouts.list()] == ["ro-1", "ro-2"]
        assert [r.id for r in uow.rollouts.list(states=["running"])] == ["ro-2"]
        assert uow.rollouts.list(group_id="other") == []


def test_stages_are_replaced_by_index_and_listed_in_order(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow)
        uow.rollouts.put_stage(RolloutStage("ro-1", 1, "waiting", planned=9))
        uow.rollouts.put_stage(RolloutStage("ro-1", 0, "soaking", planned=1, started_at=T0))
        uow.rollouts.put_stage(
            RolloutStage("ro-1", 0, "done", planned=1, started_at=T0, ended_at=T0, data={"ok": 1})
        )
        stages = uow.rollouts.stages("ro-1")
        with pytest.raises(NotFoundError):
            uow.rollouts.put_stage(RolloutStage("ghost", 0, "waiting"))
    assert [(s.index, s.state) for s in stages] == [(0, "done"), (1, "waiting")]
    assert stages[0].data == {"ok": 1} and stages[0].ended_at == T0


def test_adding_jobs_is_idempotent(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=10)
        assert uow.jobs.add(job(n) for n in range(1, 6)) == 5
        # A replay after a crash (and a mid-rollout join of new devices) inserts only the new.
        assert uow.jobs.add(job(n, state="offered") for n in range(1, 11)) == 5
        assert uow.jobs.get("ro-1", "dev-000001").state == "pending"
        assert uow.jobs.count_by_state("ro-1") == {"pending": 5, "offered": 5}


def test_jobs_need_an_existing_rollout_and_device(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=2)
    with pytest.raises(NotFoundError, match="rollout"), storage.begin() as uow:
        uow.jobs.add([job(1, rollout_id="ghost")])
    with pytest.raises(NotFoundError, match="dev-000099"), storage.begin() as uow:
        uow.jobs.add([job(1), job(99)])
    with pytest.raises(NotFoundError, match="rel-404"), storage.begin() as uow:
        uow.jobs.add([job(1, release_id="rel-404")])
    with storage.begin(readonly=True) as uow:
        assert uow.jobs.count_by_state("ro-1") == {}  # the failed unit left nothing behind
        with pytest.raises(NotFoundError):
            uow.jobs.get("ro-1", "dev-000001")


def test_transition_moves_only_jobs_in_the_given_states(storage: Storage) -> None:
    later = T0 + timedelta(minutes=1)
    retry = T0 + timedelta(minutes=30)
    with storage.begin() as uow:
        seed_rollout(uow, devices=6)
        uow.jobs.add(job(n) for n in range(1, 5))
        uow.jobs.add([job(5, state="failed")])
        moved = uow.jobs.transition(
            "ro-1",
            ["dev-000001", "dev-000002", "dev-000002", "dev-000005", "dev-000006"],
            from_states=["pending"],
            to_state="offered",
            now=later,
            next_attempt_at=retry,
            offered=True,
            count_attempt=True,
        )
        offered = uow.jobs.get("ro-1", "dev-000002")
        untouched = uow.jobs.get("ro-1", "dev-000005")
    assert moved == 2
    assert (offered.state, offered.attempts, offered.offered_at) == ("offered", 1, later)
    assert (offered.next_attempt_at, offered.updated_at) == (retry, later)
    assert untouched.state == "failed" and untouched.attempts == 0


def test_transition_records_the_reason_and_keeps_offered_at(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=1)
        uow.jobs.add([job(1, state="offered", offered_at=T0, next_attempt_at=T0)])
        uow.jobs.transition(
            "ro-1",
            ["dev-000001"],
            from_states=["offered"],
            to_state="failed",
            now=T0,
            reason="hash-mismatch",
        )
        failed = uow.jobs.get("ro-1", "dev-000001")
    assert (failed.reason, failed.offered_at, failed.next_attempt_at) == ("hash-mismatch", T0, None)


def test_update_with_expected_state(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=1)
        uow.jobs.add([job(1)])
        uow.jobs.update(job(1, state="offered", attempts=1), expected_state="pending")
        with pytest.raises(ConflictError, match="offered"):
            uow.jobs.update(job(1, state="failed"), expected_state="pending")
        with pytest.raises(NotFoundError):
            uow.jobs.update(job(2))
        assert uow.jobs.get("ro-1", "dev-000001").attempts == 1


def test_list_jobs_by_state_in_pages(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=9)
        uow.jobs.add(job(n, state="offered" if n % 3 == 0 else "pending") for n in range(1, 10))
        first = uow.jobs.list("ro-1", states=["pending"], limit=4)
        assert first.next_after is not None
        rest = uow.jobs.list("ro-1", states=["pending"], after=first.next_after, limit=4)
    pending = [j.device_id for j in first.items + rest.items]
    assert pending == [f"dev-{n:06d}" for n in (1, 2, 4, 5, 7, 8)]
    assert rest.next_after is None


def test_count_by_state_per_stage(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=5)
        uow.jobs.add([job(1, stage=0, state="confirmed"), job(2, stage=0, state="failed")])
        uow.jobs.add(job(n, stage=1) for n in range(3, 6))
        assert uow.jobs.count_by_state("ro-1", stage=0) == {"confirmed": 1, "failed": 1}
        assert uow.jobs.count_by_state("ro-1", stage=1) == {"pending": 3}
        assert uow.jobs.count_by_state("ro-1") == {"confirmed": 1, "failed": 1, "pending": 3}


def test_due_jobs_come_earliest_first(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=4)
        uow.jobs.add(
            [
                job(1, next_attempt_at=T0 + timedelta(minutes=3)),
                job(2, next_attempt_at=T0 + timedelta(minutes=1)),
                job(3, next_attempt_at=T0 + timedelta(minutes=9)),
                job(4),
            ]
        )
        due = uow.jobs.due(T0 + timedelta(minutes=3))
    assert [j.device_id for j in due] == ["dev-000002", "dev-000001"]


def test_jobs_of_one_device_across_rollouts(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=2)
        uow.releases.create(release("rel-2", counter=2))
        uow.rollouts.create(rollout("ro-2", release_id="rel-2"))
        uow.jobs.add([job(1), job(1, rollout_id="ro-2"), job(2)])
        jobs = uow.jobs.for_device("dev-000001")
    assert [j.rollout_id for j in jobs] == ["ro-1", "ro-2"]


def test_an_exception_rolls_the_whole_unit_back(storage: Storage) -> None:
    with storage.begin() as uow:
        created = seed_rollout(uow, devices=2)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), storage.begin() as uow:
        uow.rollouts.save(replace(created, state="running"), 1)
        uow.jobs.add([job(1)])
        uow.outbox.append("offer", {"devices": ["dev-000001"]}, T0)
        uow.devices.upsert([device(3)])
        raise Crash
    with storage.begin(readonly=True) as uow:
        assert uow.rollouts.get("ro-1").revision == 1
        assert uow.jobs.count_by_state("ro-1") == {}
        assert uow.outbox.pending() == 0
        with pytest.raises(NotFoundError):
            uow.devices.get("dev-000003")
