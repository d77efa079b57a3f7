"""Devices, groups and releases: the same behaviour on every storage adapter."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.storage import (
    AlreadyExistsError,
    ConflictError,
    DeviceFilter,
    DeviceGroup,
    GroupKind,
    NotFoundError,
    Storage,
)
from tests.contract.storage.factories import T0, device, release, seed_rollout


def test_device_round_trip_keeps_every_field_and_returns_utc(storage: Storage) -> None:
    original = device(1, tags={"site": "berlin", "ADUGroup": "canary"})
    with storage.begin() as uow:
        assert uow.devices.upsert([original]) == 1
    with storage.begin(readonly=True) as uow:
        stored = uow.devices.get(original.id)
    assert stored == original
    assert stored.last_seen is not None and stored.last_seen.utcoffset() == timedelta(0)


def test_upsert_replaces_fields_but_keeps_created_at(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert([device(1)])
    changed = device(1, agent_version="1.1.0", created_at=T0 + timedelta(days=1), last_seen=None)
    with storage.begin() as uow:
        uow.devices.upsert([changed])
        stored = uow.devices.get(changed.id)
    assert stored.agent_version == "1.1.0"
    assert stored.last_seen is None
    assert stored.created_at == T0


def test_missing_device_is_not_found(storage: Storage) -> None:
    with storage.begin() as uow, pytest.raises(NotFoundError, match="dev-000404"):
        uow.devices.get("dev-000404")


def test_keyset_pages_visit_every_device_once_in_id_order(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert(device(n) for n in range(1, 26))
    seen: list[str] = []
    after: str | None = None
    with storage.begin(readonly=True) as uow:
        while True:
            page = uow.devices.list(DeviceFilter(), after=after, limit=7)
            seen.extend(d.id for d in page.items)
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == [f"dev-{n:06d}" for n in range(1, 26)]


def test_last_page_that_is_exactly_full_has_no_next(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert(device(n) for n in range(1, 5))
        page = uow.devices.list(DeviceFilter(), limit=4)
    assert len(page.items) == 4 and page.next_after is None


FILTERS = [
    ("hardware", DeviceFilter(hardware_id="mt3620-b"), {3}),
    ("profile", DeviceFilter(profile="vibration"), {4}),
    ("agent-version", DeviceFilter(agent_version="2.0.0"), {5}),
    ("one-tag", DeviceFilter(tags={"site": "oslo"}), {2, 4, 6}),
    ("two-tags", DeviceFilter(tags={"site": "berlin", "ring": "canary"}), {1}),
    ("unknown-tag", DeviceFilter(tags={"nope": "x"}), set()),
    ("seen-after-inclusive", DeviceFilter(last_seen_after=T0 + timedelta(minutes=5)), {5}),
    ("seen-before-exclusive", DeviceFilter(last_seen_before=T0 + timedelta(minutes=2)), {1}),
    (
        "seen-range",
        DeviceFilter(
            last_seen_after=T0 + timedelta(minutes=2), last_seen_before=T0 + timedelta(minutes=4)
        ),
        {2, 3},
    ),
    ("combined", DeviceFilter(profile="kws", tags={"site": "oslo"}), {2, 6}),
]


@pytest.mark.parametrize(
    ("where", "expected"), [f[1:] for f in FILTERS], ids=[f[0] for f in FILTERS]
)
def test_filters(storage: Storage, where: DeviceFilter, expected: set[int]) -> None:
    with storage.begin() as uow:
        uow.devices.upsert(
            [
                device(1, tags={"site": "berlin", "ring": "canary"}),
                device(2),
                device(3, hardware_id="mt3620-b"),
                device(4, profile="vibration"),
                device(5, agent_version="2.0.0"),
                device(6, last_seen=None),  # never seen: outside every last_seen range
            ]
        )
    with storage.begin(readonly=True) as uow:
        found = {int(d.id[-6:]) for d in uow.devices.list(where, limit=100).items}
        assert uow.devices.count(where) == len(expected)
    assert found == expected


@pytest.mark.parametrize("limit", [0, -1, 10_001])
def test_page_size_outside_the_limits_is_refused(storage: Storage, limit: int) -> None:
    with storage.begin() as uow, pytest.raises(ValueError, match="limit"):
        uow.devices.list(DeviceFilter(), limit=limit)


def test_tag_group_membership_follows_the_devices_tags(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert(device(n) for n in range(1, 7))
        uow.groups.put(DeviceGroup("grp-canary", "Canary", GroupKind.TAG, "site=berlin"))
        before = [d.id for d in uow.groups.members("grp-canary").items]
        uow.devices.upsert([device(2, tags={"site": "berlin"})])
        after = [d.id for d in uow.groups.members("grp-canary").items]
    assert before == ["dev-000001", "dev-000003", "dev-000005"]
    assert after == ["dev-000001", "dev-000002", "dev-000003", "dev-000005"]


def test_query_group_membership(storage: Storage) -> None:
    selector = "hardware_id=mt3620 and tags.site=oslo and profile=kws"
    with storage.begin() as uow:
        uow.devices.upsert([device(1), device(2), device(4, profile="vibration")])
        uow.groups.put(DeviceGroup("q", "Oslo kws", GroupKind.QUERY, selector, "Europe/Oslo"))
        page = uow.groups.members("q", limit=10)
        assert uow.groups.get("q").time_zone == "Europe/Oslo"
    assert [d.id for d in page.items] == ["dev-000002"]


def test_groups_put_replaces_and_lists_by_id(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.groups.put(DeviceGroup("b", "B", GroupKind.TAG, "ring=b"))
        uow.groups.put(DeviceGroup("a", "A", GroupKind.TAG, "ring=a"))
        uow.groups.put(DeviceGroup("a", "A", GroupKind.TAG, "ring=a2", production=True))
    with storage.begin(readonly=True) as uow:
        groups = uow.groups.list()
    assert [g.id for g in groups] == ["a", "b"]
    assert groups[0].selector == "ring=a2" and groups[0].production


def test_group_names_are_unique(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.groups.put(DeviceGroup("a", "Same", GroupKind.TAG, "ring=a"))
        with pytest.raises(AlreadyExistsError):
            uow.groups.put(DeviceGroup("b", "Same", GroupKind.TAG, "ring=b"))


def test_group_delete(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.groups.put(DeviceGroup("a", "A", GroupKind.TAG, "ring=a"))
        uow.groups.delete("a")
        with pytest.raises(NotFoundError):
            uow.groups.get("a")
        with pytest.raises(NotFoundError):
            uow.groups.delete("a")
        with pytest.raises(NotFoundError):
            uow.groups.members("a")


def test_a_group_used_by_a_rollout_cannot_be_deleted(storage: Storage) -> None:
    with storage.begin() as uow:
        seed_rollout(uow)
        with pytest.raises(ConflictError):
            uow.groups.delete("grp-berlin")


def test_releases_are_immutable(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.releases.create(release("rel-1", counter=1))
    with storage.begin() as uow:
        with pytest.raises(AlreadyExistsError, match="rel-1"):
            uow.releases.create(release("rel-1", counter=99))
        # The unit of work stays usable after the refusal (no aborted transaction).
        uow.releases.create(release("rel-2", counter=2))
    with storage.begin(readonly=True) as uow:
        assert uow.releases.get("rel-1") == release("rel-1", counter=1)
        assert uow.releases.get("rel-2").counter == 2
        with pytest.raises(NotFoundError):
            uow.releases.get("rel-3")


def test_releases_list_in_pages(storage: Storage) -> None:
    with storage.begin() as uow:
        for n in range(5):
            uow.releases.create(release(f"rel-{n}", counter=n))
        first = uow.releases.list(limit=3)
        assert first.next_after is not None
        second = uow.releases.list(after=first.next_after, limit=3)
    assert [r.id for r in first.items + second.items] == [f"rel-{n}" for n in range(5)]
    assert second.next_after is None


def test_members_among_answers_for_the_listed_devices_only(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert(device(n) for n in range(1, 7))
        uow.groups.put(DeviceGroup("berlin", "Berlin", GroupKind.TAG, "site=berlin"))
        among = uow.groups.members_among("berlin", ["dev-000001", "dev-000002", "nope"])
        assert uow.groups.members_among("berlin", []) == set()
        with pytest.raises(NotFoundError):
            uow.groups.members_among("missing", ["dev-000001"])
    assert among == {"dev-000001"}


REPORTS = [
    # (name, the device's own report, whether `hardware_id=mt3620 and tags.site=berlin` holds)
    ("agrees", {"hardwareId": "mt3620"}, True),
    ("silent", {}, True),
    ("disagrees", {"hardwareId": "mt3620-b"}, False),
    ("not-a-string", {"hardwareId": 3620}, False),
]


@pytest.mark.parametrize(
    ("reported", "member"), [r[1:] for r in REPORTS], ids=[r[0] for r in REPORTS]
)
def test_a_report_narrows_a_query_but_never_widens_it(
    storage: Storage, reported: dict[str, object], member: bool
) -> None:
    selector = "hardware_id=mt3620 and tags.site=berlin"
    with storage.begin() as uow:
        uow.devices.upsert([device(1, reported=reported), device(2, reported=reported)])
        uow.groups.put(DeviceGroup("q", "Q", GroupKind.QUERY, selector))
        members = [d.id for d in uow.groups.members("q").items]
        ids = uow.groups.member_ids("q").items
        among = uow.groups.members_among("q", ["dev-000001", "dev-000002"])
    expected = ["dev-000001"] if member else []  # dev-000002 is in oslo: never a member
    assert members == expected and ids == expected and sorted(among) == expected


def test_a_query_naming_no_tag_has_no_members(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert(device(n) for n in range(1, 4))
        uow.groups.put(DeviceGroup("q", "Q", GroupKind.QUERY, "hardware_id=mt3620"))
        assert uow.groups.members("q").items == []
        assert uow.groups.member_ids("q").items == []
        assert uow.groups.members_among("q", ["dev-000001"]) == set()
