"""The store keeps each device's rollups beside the group ones, and reads them per device for
given device ids, release and window (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.domain.rollups import merge_all
from service.telemetry import IngestWorker
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db

BUCKET0_MS = T0_MS // 60_000 * 60_000


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ingest(db: Db) -> None:
    """dev-0..3 send 10 rows a minute for 3 minutes: even devices on rel-2, odd on rel-1."""
    fleet = Fleet()
    for minute in range(3):
        fleet.clock_ms = BUCKET0_MS + minute * 60_000 + 1_000
        for d in range(4):
            fleet.send(fleet.batch(f"dev-{d}", "rel-2" if d % 2 == 0 else "rel-1", n=10))
    IngestWorker(fleet.source, db.store, groups_of=lambda _d: ("grp-1",)).drain()


def test_each_device_s_rows_are_stored_and_read_per_device(db: Db) -> None:
    ingest(db)
    found = db.store.device_rollups(release_id="rel-2")
    assert sorted(found) == ["dev-0", "dev-2"]
    for device, rows in found.items():
        merged = merge_all(r for _, r in rows)
        assert merged.devices == {device} and merged.inferences == 30
        slots = {(k["core"], k["model_id"], k["model_version"]) for k, _ in rows}
        assert slots == {("m4-0", "kws", "2"), ("", "", "")}  # the model and the presence row
    # the device rollups hold exactly what the group rollups hold
    group = db.store.cohort("grp-1", "rel-2", at(BUCKET0_MS))
    devices = merge_all(r for rows in found.values() for _, r in rows)
    assert devices.inferences == group.inferences and devices.devices == group.devices


def test_a_read_names_its_devices_release_and_window(db: Db) -> None:
    ingest(db)
    only = db.store.device_rollups(release_id="rel-1", device_ids=["dev-1", "dev-2", "nobody"])
    assert list(only) == ["dev-1"]  # dev-2 runs rel-2
    assert db.store.device_rollups(release_id="rel-2", device_ids=[]) == {}
    # the window starts exactly: since half a minute into the first bucket leaves that bucket out
    late = db.store.device_rollups(
        release_id="rel-2", device_ids=["dev-0"], since=at(BUCKET0_MS + 30_000)
    )
    assert merge_all(r for _, r in late["dev-0"]).inferences == 20
    on_edge = db.store.device_rollups(
        release_id="rel-2", device_ids=["dev-0"], since=at(BUCKET0_MS)
    )
    assert merge_all(r for _, r in on_edge["dev-0"]).inferences == 30
    until = db.store.device_rollups(
        release_id="rel-2", device_ids=["dev-0"], until=at(BUCKET0_MS + 60_000)
    )
    assert merge_all(r for _, r in until["dev-0"]).inferences == 10


def test_many_device_ids_are_read_in_chunks(db: Db) -> None:
    ingest(db)
    ids = [f"dev-{d}" for d in range(4)] + [f"absent-{i}" for i in range(1200)]
    assert sorted(db.store.device_rollups(release_id="rel-2", device_ids=ids)) == ["dev-0", "dev-2"]


def test_a_redelivered_batch_is_not_merged_twice(db: Db) -> None:
    fleet = Fleet()
    fleet.clock_ms = BUCKET0_MS + 1_000
    batch = fleet.batch("dev-0", "rel-2", n=10)
    fleet.send(batch)
    fleet.send(batch)  # the same message id again
    IngestWorker(fleet.source, db.store).drain()
    rows = db.store.device_rollups(release_id="rel-2", since=at(BUCKET0_MS) - timedelta(0))
    assert merge_all(r for _, r in rows["dev-0"]).inferences == 10


def test_a_bucket_that_grew_is_read_afresh_not_from_the_decoded_cache(db: Db) -> None:
    """The gate reads the same rows at every look, and decoded rows are kept between reads; a
    bucket that ingest merged more rows into must be decoded again."""
    fleet = Fleet()
    fleet.clock_ms = BUCKET0_MS + 1_000
    fleet.send(fleet.batch("dev-0", "rel-2", n=10))
    IngestWorker(fleet.source, db.store).drain()
    first = db.store.device_rollups(release_id="rel-2")
    assert merge_all(r for _, r in first["dev-0"]).inferences == 10
    fleet.clock_ms += 2_000  # the same 10 s bucket
    fleet.send(fleet.batch("dev-0", "rel-2", n=5))
    IngestWorker(fleet.source, db.store).drain()
    again = db.store.device_rollups(release_id="rel-2")
    assert merge_all(r for _, r in again["dev-0"]).inferences == 15
    assert len(again["dev-0"]) == len(first["dev-0"])  # the same rows, one of them grown


def test_the_decoded_cache_is_bounded(db: Db) -> None:
    store = type(db.store)(db.store.engine, decoded_cache=2)
    ingest(db)
    found = store.device_rollups(release_id="rel-2")
    assert sum(len(rows) for rows in found.values()) > 2
    assert len(store._decoded._entries) == 2
    assert store.device_rollups(release_id="rel-2") == found
