"""Ingest: dedupe, reordering, dead letters, checkpoints, crash between commit and checkpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from device_agent.protocol.telemetry import MAX_BATCH_BYTES, EventRecord, encode_batch
from service.telemetry import IngestWorker
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def worker(fleet: Fleet, db: Db, **kwargs: object) -> IngestWorker:
    return IngestWorker(fleet.source, db.store, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def test_batches_become_rows_rollups_and_checkpoints(db: Db) -> None:
    fleet = Fleet()
    for d in range(6):
        fleet.send(fleet.batch(f"dev-{d}", n=25))
    report = worker(fleet, db).run_once()
    assert (report.received, report.messages, report.records) == (6, 6, 6 * 26)
    assert db.count("telemetry_inference") == 150
    assert db.count("telemetry_health") == 6
    cohort = db.store.cohort("", "rel-2", NOW.replace(year=2020))
    assert cohort.inferences == 150 and len(cohort.devices) == 6
    expected = {p: fleet.source.last_sequence(p) for p in fleet.source.partitions()}
    assert fleet.source.checkpoints == {
        p: s for p, s in expected.items() if s is not None and s >= 0
    }
    assert db.store.stats()["ingested"] == 6


def test_duplicates_are_stored_once(db: Db) -> None:
    fleet = Fleet()
    batch = fleet.batch("dev-1", n=10)
    fleet.send(batch)
    fleet.send(batch)  # the device resent after a lost PUBACK: a new feed event, the same mid
    w = worker(fleet, db)
    report = w.run_once()
    fleet.send(batch)  # and again, in a later worker batch
    report2 = w.run_once()
    assert (report.messages, report.duplicates, report2.duplicates) == (1, 1, 1)
    assert db.count("telemetry_inference") == 10
    assert db.store.cohort("", "rel-2", NOW.replace(year=2020)).inferences == 10
    stats = db.store.stats()
    assert (stats["ingested"], stats["duplicates"]) == (1, 2)


def test_reordered_batches_are_all_kept(db: Db) -> None:
    fleet = Fleet()
    batches = [fleet.batch("dev-1", n=3) for _ in range(5)]
    for batch in reversed(batches):
        fleet.send(batch)
    worker(fleet, db, batch=2).drain()
    assert db.count("telemetry_inference") == 15
    assert db.count("telemetry_seen") == 5


def _oversized() -> bytes:
    return b'{"schema":"tinyfleet.telemetry/1","pad":"' + b"x" * MAX_BATCH_BYTES + b'"}'


BAD = [
    ("malformed", lambda f: f.raw("dev-1", b"{not json")),
    ("malformed", lambda f: f.raw("dev-1", b"[1, 2]")),
    ("oversized", lambda f: f.raw("dev-1", _oversized())),
    ("malformed", lambda f: f.raw("dev-1", b"[" * 100_000 + b"]" * 100_000)),
    (
        "unknown-schema",
        lambda f: f.raw("dev-1", json.dumps({"schema": "tinyfleet.telemetry/9"}).encode()),
    ),
    ("wrong-device", lambda f: f.send(f.batch("dev-2"), body=encode_batch(f.batch("dev-1")))),
    ("wrong-device", lambda f: f.raw(None, encode_batch(f.batch("dev-1")))),
    (
        "bad-record",
        lambda f: f.raw(
            "dev-1",
            encode_batch(f.batch("dev-1")).replace(b'"inference":[[', b'"inference":[["m4",1,'),
        ),
    ),
    ("bad-record", lambda f: f.send(f.batch("dev-1"), mid="dev-1:999")),
]


@pytest.mark.parametrize(
    ("reason", "inject"), BAD, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD)]
)
def test_bad_telemetry_is_dead_lettered_and_never_blocks(db: Db, reason: str, inject) -> None:
    fleet = Fleet()
    fleet.send(fleet.batch("dev-1", n=4))
    inject(fleet)
    fleet.send(fleet.batch("dev-1", n=4))
    report = worker(fleet, db).run_once()
    assert report.dead_letters == 1 and report.by_reason == {reason: 1}
    assert report.messages == 2
    letters = db.store.dead_letters()
    assert [x["reason"] for x in letters] == [reason] and letters[0]["detail"]
    assert db.store.stats()["by_reason"] == {reason: 1}
    assert db.count("telemetry_inference") == 8


def test_a_failed_checkpoint_loses_and_double_counts_nothing(db: Db) -> None:
    fleet = Fleet()
    for d in range(8):
        fleet.send(fleet.batch(f"dev-{d}", n=5))
    fleet.source.fail_checkpoints = 100
    report = worker(fleet, db).run_once()
    assert report.checkpoint_failures >= 1 and fleet.source.checkpoints == {}
    # A new worker process: the source would redeliver from its (missing) checkpoint.
    for p in fleet.source.partitions():
        fleet.source.seek(p, -1)
    fleet.source.fail_checkpoints = 0
    for d in range(8, 10):
        fleet.send(fleet.batch(f"dev-{d}", n=5))
    w2 = worker(fleet, db)
    w2.drain()
    assert db.count("telemetry_inference") == 50
    assert db.store.cohort("", "rel-2", NOW.replace(year=2020)).inferences == 50
    assert db.store.stats()["ingested"] == 10


class FailingCommit:
    """Wraps a store so that the next commit fails after its rows were written (then rolls back)."""

    def __init__(self, db: Db) -> None:
        self.db, self.fail = db, True

    def __getattr__(self, name: str) -> object:
        return getattr(self.db.store, name)

    def commit(self, *args: object, **kwargs: object) -> object:
        if self.fail:
            self.fail = False
            raise RuntimeError("database connection lost before COMMIT")
        return self.db.store.commit(*args, **kwargs)  # type: ignore[arg-type]


def test_a_failed_commit_is_retried_from_the_committed_position(db: Db) -> None:
    fleet = Fleet()
    for d in range(5):
        fleet.send(fleet.batch(f"dev-{d}", n=5))
    w = IngestWorker(fleet.source, FailingCommit(db), clock=lambda: NOW)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        w.run_once()
    assert db.count("telemetry_inference") == 0
    w.drain()
    assert db.count("telemetry_inference") == 25


def test_two_workers_split_the_partitions(db: Db) -> None:
    fleet = Fleet()
    for d in range(40):
        fleet.send(
            fleet.batch(
                f"dev-{d}",
                n=3,
                events=(EventRecord(T0_MS, "crash", "m4-0", None, 1),) if d % 10 == 0 else (),
            )
        )
    a = worker(fleet, db, partitions=["0", "1"])
    b = worker(fleet, db, partitions=["2", "3"])
    for _ in range(3):
        a.run_once()
        b.run_once()
    assert db.count("telemetry_inference") == 120
    cohort = db.store.cohort("", "rel-2", NOW.replace(year=2020))
    assert cohort.inferences == 120 and len(cohort.devices) == 40
    assert len(cohort.devices_crashed) == 4
    assert set(fleet.source.checkpoints) == {"0", "1", "2", "3"}


def test_groups_and_releases_key_the_rollups(db: Db) -> None:
    fleet = Fleet()
    for d in range(6):
        fleet.send(fleet.batch(f"dev-{d}", "rel-2" if d < 2 else "rel-1", n=10))
    groups = {f"dev-{d}": ("berlin",) for d in range(4)}
    w = worker(fleet, db, groups_of=lambda device: groups.get(device, ()))
    w.run_once()
    since = NOW.replace(year=2020)
    assert db.store.cohort("berlin", "rel-2", since).inferences == 20
    assert db.store.cohort("berlin", "rel-1", since).inferences == 20
    assert db.store.cohort("", "rel-1", since).inferences == 40


def test_prune_drops_old_raw_rows_but_keeps_rollups(db: Db) -> None:
    fleet = Fleet()
    fleet.send(fleet.batch("dev-1", n=10))
    worker(fleet, db).run_once()
    deleted = db.store.prune(datetime.fromtimestamp((T0_MS + 1) / 1000, tz=UTC))
    assert deleted["telemetry_inference"] == 10
    assert db.count("telemetry_inference") == 0
    assert db.store.cohort("", "rel-2", NOW.replace(year=2020)).inferences == 10
