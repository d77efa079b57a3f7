"""Device upsert at its edges, on every adapter: repeated ids, batches larger than one SQL
statement, unusual ids and JSON; on SQL, an unchanged device is not rewritten and driver errors
leave as storage errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from service.storage import Device, DeviceFilter, SqlStorage, Storage, StorageError, upgrade
from service.storage._sql_registry import UPSERT_CHUNK
from tests.contract.storage.conftest import Backend
from tests.contract.storage.factories import T0, device


def test_a_repeated_id_in_one_batch_ends_as_the_last_with_the_first_created_at(
    storage: Storage,
) -> None:
    first = device(1, agent_version="1.0.0", created_at=T0)
    last = device(1, agent_version="2.0.0", created_at=T0 + timedelta(days=1), last_seen=None)
    with storage.begin() as uow:
        assert uow.devices.upsert([first, device(2), last]) == 3
    with storage.begin(readonly=True) as uow:
        stored = uow.devices.get(first.id)
        assert uow.devices.count(DeviceFilter()) == 2
    assert stored == Device(**{**_fields(last), "created_at": T0})


def test_a_repeated_id_of_a_stored_device_keeps_the_stored_created_at(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.devices.upsert([device(1, created_at=T0)])
    later = T0 + timedelta(days=1)
    with storage.begin() as uow:
        uow.devices.upsert(
            [device(1, profile="a", created_at=later), device(1, profile="b", created_at=later)]
        )
        stored = uow.devices.get("dev-000001")
    assert (stored.profile, stored.created_at) == ("b", T0)


def test_upserts_in_one_unit_of_work_see_each_other_only_as_stored_rows(
    storage: Storage,
) -> None:
    one, two = device(1, agent_version="1.0.0"), device(1, agent_version="2.0.0")
    with storage.begin() as uow:
        for version in (one, two, one, two, one):
            assert uow.devices.upsert([version, device(2)]) == 2
        stored = uow.devices.get(one.id)
        assert uow.devices.count(DeviceFilter()) == 2
    assert stored == one


def test_a_batch_larger_than_one_statement_is_written_whole_and_in_order(
    storage: Storage,
) -> None:
    size = UPSERT_CHUNK + 2

    def feed() -> Iterator[Device]:  # a generator: the input is read once
        for n in range(1, size):
            yield device(n)
        yield device(1, agent_version="9.9.9", created_at=T0 + timedelta(days=1))

    with storage.begin() as uow:
        assert uow.devices.upsert(feed()) == size
    with storage.begin(readonly=True) as uow:
        stored = uow.devices.get("dev-000001")
        assert uow.devices.count(DeviceFilter()) == size - 1
    assert (stored.agent_version, stored.created_at) == ("9.9.9", T0)


ODD_IDS = [
    ("single-quote", "dev-'; DROP TABLE devices; --"),
    ("double-quote", 'dev-"quoted"'),
    ("backslash", "dev\\N\\x00"),
    ("copy-delimiters", "dev\t1,2\n3|4"),
    ("unicode", "gerät-设备-🛰️"),
    ("max-length", "d" * 200),
    ("space", " "),
]


@pytest.mark.parametrize("device_id", [i[1] for i in ODD_IDS], ids=[i[0] for i in ODD_IDS])
def test_unusual_ids_and_json_round_trip(storage: Storage, device_id: str) -> None:
    odd = device(
        1,
        id=device_id,
        hardware_id=device_id,
        tags={"site": device_id, 'k"\\': "ü"},
        reported={"m4-0": {"model": device_id, "n": [1, 2.5, None, True]}, "ключ": {}},
    )
    with storage.begin() as uow:
        assert uow.devices.upsert([odd, device(2)]) == 2
        assert uow.devices.upsert([odd]) == 1  # unchanged: the same stored result
    with storage.begin(readonly=True) as uow:
        assert uow.devices.get(device_id) == odd
        found = uow.devices.list(DeviceFilter(tags={"site": device_id}), limit=10).items
    assert found == [odd]


_LOG_UPDATES = {
    "sqlite": [
        "CREATE TABLE test_updates (id TEXT)",
        "CREATE TRIGGER test_log_update AFTER UPDATE ON devices "
        "BEGIN INSERT INTO test_updates VALUES (new.id); END",
    ],
    "postgresql": [
        "CREATE TABLE test_updates (id TEXT)",
        "CREATE FUNCTION test_log_update() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO test_updates VALUES (NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER test_log_update AFTER UPDATE ON devices "
        "FOR EACH ROW EXECUTE FUNCTION test_log_update()",
    ],
}


def test_an_unchanged_device_is_not_rewritten(sql_backend: Backend) -> None:
    fleet = [device(n) for n in range(1, 6)]
    with sql_backend.storage.begin() as uow:
        uow.devices.upsert(fleet)
    sql_backend.raw(*_LOG_UPDATES[sql_backend.name])
    seen = device(2, last_seen=T0 + timedelta(hours=1))
    gone = device(3, last_seen=None)
    retagged = device(4, tags={"site": "oslo", "ring": "canary"})
    later = T0 + timedelta(days=1)  # created_at alone is never written to a stored device
    again = [device(1, created_at=later), seen, gone, retagged, device(5)]
    with sql_backend.storage.begin() as uow:
        assert uow.devices.upsert(again) == 5
        stored = uow.devices.list(DeviceFilter(), limit=10).items
    assert sorted(r[0] for r in sql_backend.query("SELECT id FROM test_updates")) == [
        "dev-000002",
        "dev-000003",
        "dev-000004",
    ]
    assert stored == [fleet[0], seen, gone, retagged, fleet[4]]


BAD_FOR_POSTGRESQL = [
    ("nul-in-id-refused-by-copy", {"id": "dev-\x00"}),
    ("agent-version-over-64-refused-by-merge", {"agent_version": "v" * 65}),
]


@pytest.mark.parametrize(
    "changes", [b[1] for b in BAD_FOR_POSTGRESQL], ids=[b[0] for b in BAD_FOR_POSTGRESQL]
)
def test_postgresql_refusals_are_storage_errors_and_write_nothing(
    pg_url: str, changes: dict[str, str]
) -> None:
    upgrade(pg_url)
    storage = SqlStorage(pg_url)
    try:
        with pytest.raises(StorageError, match="database error"), storage.begin() as uow:
            uow.devices.upsert([device(1), device(2, **changes)])
        with storage.begin(readonly=True) as uow:
            assert uow.devices.count(DeviceFilter()) == 0
    finally:
        storage.close()


def _fields(d: Device) -> dict[str, object]:
    return {name: getattr(d, name) for name in Device.__dataclass_fields__}
