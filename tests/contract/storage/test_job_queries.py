"""Device jobs per release (forward and rollback jobs side by side) and the engine's set-based
queries (figures, offer candidates, group joiners) on every storage adapter."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.storage import ConflictError, NotFoundError, Storage
from tests.contract.storage.factories import T0, device, job, release, rollout, seed_rollout


def _with_previous(storage: Storage, devices: int) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=devices)
        uow.releases.create(release("rel-0", counter=0))


def test_a_device_has_a_forward_and_a_rollback_job(storage: Storage) -> None:
    _with_previous(storage, 2)
    with storage.begin() as uow:
        uow.jobs.add([job(1, state="soaking"), job(1, release_id="rel-0"), job(2)])
        assert uow.jobs.add([job(1, release_id="rel-0", state="offered")]) == 0  # replay
        assert uow.jobs.get("ro-1", "dev-000001").state == "soaking"  # the rollout's release
        assert uow.jobs.get("ro-1", "dev-000001", "rel-0").state == "pending"
        uow.jobs.update(job(1, release_id="rel-0", state="offered"), expected_state="pending")
        moved = uow.jobs.transition(
            "ro-1",
            ["dev-000001"],
            from_states=["soaking"],
            to_state="cancelled",
            now=T0,
        )
        assert moved == 1
        assert uow.jobs.get("ro-1", "dev-000001", "rel-0").state == "offered"
        assert uow.jobs.count_by_state("ro-1", release_id="rel-0") == {"offered": 1}
        assert uow.jobs.count_by_state("ro-1") == {"offered": 1, "cancelled": 1, "pending": 1}
        assert [j.release_id for j in uow.jobs.for_device("dev-000001")] == ["rel-0", "rel-1"]
        with pytest.raises(NotFoundError):
            uow.jobs.get("ro-1", "dev-000002", "rel-0")


def test_pages_cover_both_jobs_of_a_device(storage: Storage) -> None:
    _with_previous(storage, 3)
    with storage.begin() as uow:
        uow.jobs.add(job(n, release_id=r) for n in (1, 2, 3) for r in ("rel-0", "rel-1"))
        seen: list[tuple[str, str]] = []
        after: str | None = None
        while True:
            page = uow.jobs.list("ro-1", after=after, limit=4)
            seen += [(j.device_id, j.release_id) for j in page.items]
            if page.next_after is None:
                break
            after = page.next_after
        only = uow.jobs.list("ro-1", release_id="rel-0", limit=10).items
    assert seen == [(f"dev-{n:06d}", r) for n in (1, 2, 3) for r in ("rel-0", "rel-1")]
    assert [j.release_id for j in only] == ["rel-0"] * 3


def test_figures_group_by_release_stage_and_state(storage: Storage) -> None:
    _with_previous(storage, 4)
    with storage.begin() as uow:
        uow.jobs.add([job(1, state="confirmed"), job(2, stage=1), job(3, stage=1)])
        uow.jobs.add([job(1, release_id="rel-0", state="offered")])
        figures = uow.jobs.figures("ro-1")
    assert figures == {
        ("rel-1", 0): {"confirmed": 1},
        ("rel-1", 1): {"pending": 2},
        ("rel-0", 0): {"offered": 1},
    }


def test_candidates_in_stage_and_order_key_order(storage: Storage) -> None:
    _with_previous(storage, 8)
    with storage.begin() as uow:
        uow.releases.create(release("rel-2", counter=2))
        uow.rollouts.create(rollout("ro-2", release_id="rel-2"))
        uow.jobs.add(
            [
                job(1, stage=1, order_key=-5),
                job(2, stage=0, order_key=7),
                job(3, stage=0, order_key=-(2**63)),
                job(4, stage=2, order_key=0),  # stage not started
                job(5, stage=0, next_attempt_at=T0 + timedelta(minutes=5)),  # retry wait
                job(6, stage=0, state="offered"),  # not pending
                job(7, stage=0),  # busy in ro-2
                job(8, stage=0, order_key=2**63 - 1),
                job(8, stage=0, release_id="rel-0"),  # another release of this rollout
            ]
        )
        uow.jobs.add([job(7, rollout_id="ro-2", release_id="rel-2", state="downloading")])
        uow.jobs.add([job(8, rollout_id="ro-2", release_id="rel-2", state="confirmed")])
        found = uow.jobs.candidates("ro-1", "rel-1", max_stage=1, now=T0, limit=100)
        first = uow.jobs.candidates("ro-1", "rel-1", max_stage=1, now=T0, limit=2)
        later = uow.jobs.candidates(
            "ro-1", "rel-1", max_stage=0, now=T0 + timedelta(minutes=5), limit=100
        )
        back = uow.jobs.candidates("ro-1", "rel-0", max_stage=0, now=T0, limit=100)
    assert [j.device_id[-1] for j in found] == ["3", "2", "8", "1"]
    assert [j.device_id[-1] for j in first] == ["3", "2"]
    assert {j.device_id[-1] for j in later} == {"3", "2", "8", "5"}
    assert [(j.device_id, j.release_id) for j in back] == [("dev-000008", "rel-0")]


def test_joiners_are_group_members_without_a_job(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=9)  # the group holds the odd devices (site=berlin)
        uow.jobs.add([job(1), job(3, state="cancelled"), job(2)])
        whole = uow.jobs.joiners("ro-1", "grp-berlin")
        assert (whole.items, whole.next_after) == (["dev-000005", "dev-000007", "dev-000009"], None)
        first = uow.jobs.joiners("ro-1", "grp-berlin", scan=4)  # devices 1 to 4
        assert (first.items, first.next_after) == ([], "dev-000004")
        second = uow.jobs.joiners("ro-1", "grp-berlin", after=first.next_after, scan=4)
        assert (second.items, second.next_after) == (["dev-000005", "dev-000007"], "dev-000008")
        last = uow.jobs.joiners("ro-1", "grp-berlin", after=second.next_after, scan=4)
        assert (last.items, last.next_after) == (["dev-000009"], None)
        uow.devices.upsert([device(11)])
        assert uow.jobs.joiners("ro-1", "grp-berlin").items[-1] == "dev-000011"
        with pytest.raises(NotFoundError):
            uow.jobs.joiners("ro-1", "grp-ghost")


def test_transition_all_moves_one_release_in_one_statement(storage: Storage) -> None:
    _with_previous(storage, 5)
    later = T0 + timedelta(minutes=2)
    with storage.begin() as uow:
        uow.jobs.add(job(n, next_attempt_at=T0) for n in (1, 2, 3))
        uow.jobs.add([job(4, state="offered"), job(5, release_id="rel-0")])
        moved = uow.jobs.transition_all(
            "ro-1",
            release_id="rel-1",
            from_states=["pending"],
            to_state="cancelled",
            now=later,
            reason=":aborted",
        )
        cancelled = uow.jobs.get("ro-1", "dev-000001")
        assert uow.jobs.count_by_state("ro-1", release_id="rel-1") == {
            "cancelled": 3,
            "offered": 1,
        }
        assert uow.jobs.get("ro-1", "dev-000005", "rel-0").state == "pending"
    assert moved == 3
    assert (cancelled.reason, cancelled.next_attempt_at, cancelled.updated_at) == (
        ":aborted",
        None,
        later,
    )


def test_member_ids_page_through_the_group(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=9)  # the group holds the odd devices
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = uow.groups.member_ids("grp-berlin", after=after, limit=3)  # 3 devices a page
            seen += page.items
            pages += 1
            if page.next_after is None:
                break
            after = page.next_after
        with pytest.raises(NotFoundError):
            uow.groups.member_ids("grp-ghost")
    assert seen == [f"dev-{n:06d}" for n in (1, 3, 5, 7, 9)]
    assert pages == 4  # the third window was full: a fourth, empty one ends the walk


def test_plan_bulk_inserts_pending_jobs_once(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow, devices=3)
        rows = [("dev-000001", 0, -(2**63)), ("dev-000002", 1, 2**63 - 1), ("dev-000003", 1, 0)]
        assert uow.jobs.plan("ro-1", "rel-1", iter(rows), T0) == 3
        stored = uow.jobs.get("ro-1", "dev-000002")
        assert uow.jobs.count_by_state("ro-1", stage=1) == {"pending": 2}
    assert (stored.state, stored.stage, stored.order_key, stored.updated_at) == (
        "pending",
        1,
        2**63 - 1,
        T0,
    )
    assert (stored.attempts, stored.reason, stored.offered_at, stored.release_id) == (
        0,
        None,
        None,
        "rel-1",
    )
    with pytest.raises(ConflictError), storage.begin() as uow:
        uow.jobs.plan("ro-1", "rel-1", [("dev-000001", 0, 0)], T0)


def test_offer_moves_pending_jobs_and_counts_the_attempt(storage: Storage) -> None:
    later = T0 + timedelta(minutes=1)
    with storage.begin() as uow:
        seed_rollout(uow, devices=3)
        uow.jobs.add(
            [
                job(1, attempts=1, reason="download:fetch", next_attempt_at=T0),
                job(2, state="offered", attempts=1),
                job(3),
            ]
        )
        moved = uow.jobs.offer("ro-1", "rel-1", ["dev-000001", "dev-000002", "dev-000003"], later)
        retried = uow.jobs.get("ro-1", "dev-000001")
        untouched = uow.jobs.get("ro-1", "dev-000002")
    assert moved == 2
    assert (retried.state, retried.attempts, retried.offered_at) == ("offered", 2, later)
    assert (retried.next_attempt_at, retried.reason, retried.updated_at) == (
        None,
        "download:fetch",
        later,
    )
    assert untouched.attempts == 1 and untouched.offered_at is None


def test_an_offer_stores_its_timeout_and_comes_due_at_it(storage: Storage) -> None:
    deadline = T0 + timedelta(days=1)
    with storage.begin() as uow:
        seed_rollout(uow, devices=1)
        uow.jobs.add([job(1)])
        assert uow.jobs.offer("ro-1", "rel-1", ["dev-000001"], T0, deadline) == 1
        offered = uow.jobs.get("ro-1", "dev-000001")
        early = uow.jobs.due(deadline - timedelta(seconds=1))
        due = uow.jobs.due(deadline)
    assert (offered.state, offered.next_attempt_at) == ("offered", deadline)
    assert early == [] and [j.device_id for j in due] == ["dev-000001"]


def test_outbox_append_many_keeps_the_order(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.outbox.append("first", {"n": 0}, T0)
        uow.outbox.append_many([("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})], T0)
        uow.outbox.append_many([], T0)
        claimed = uow.outbox.claim(limit=10)
    assert [(m.kind, m.payload["n"]) for m in claimed] == [
        ("first", 0),
        ("a", 1),
        ("b", 2),
        ("c", 3),
    ]
    assert [m.id for m in claimed] == sorted(m.id for m in claimed)


def test_hardware_ids_of_many_devices(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert([device(1), device(2, hardware_id="stm32mp1")])
        found = uow.devices.hardware_ids(["dev-000001", "dev-000002", "dev-000404"])
    assert found == {"dev-000001": "mt3620", "dev-000002": "stm32mp1"}
