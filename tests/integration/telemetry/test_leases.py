"""Ingest workers sharing partitions by lease, on SQLite and PostgreSQL, driven step by step.

Each worker reads the one feed through its own reader (as each process has its own client);
time is one injected clock per test, moved past lease ttls instead of waiting for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.telemetry import (
    InFlightError,
    IngestWorker,
    LeaseConfig,
    LeaseLostError,
    MemorySource,
    Received,
)
from service.telemetry._leases import Fence, leases
from tests.integration.telemetry._world import Fleet
from tests.integration.telemetry.conftest import Db

TTL = timedelta(seconds=30)
PARTITIONS = 8
ROWS = 3  # inference rows per batch (plus one health row)


@dataclass
class Clock:
    now: datetime = datetime(2026, 12, 8, 9, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


def fleet() -> Fleet:
    return Fleet(source=MemorySource(PARTITIONS))


def leased(fleet: Fleet, db: Db, clock: Clock, name: str, *, batch: int = 5000) -> IngestWorker:
    return IngestWorker(
        fleet.source.reader(),
        db.store,
        leases=LeaseConfig(ttl=TTL, worker_id=name),
        batch=batch,
        clock=clock,
    )


def send(fleet: Fleet, count: int, *, start: int = 0) -> None:
    for d in range(start, start + count):
        fleet.send(fleet.batch(f"dev-{d % 37}", n=ROWS))


def rounds(workers: list[IngestWorker], clock: Clock, n: int = 4) -> None:
    """Each worker steps once per renewal period, `n` periods."""
    for _ in range(n):
        for w in workers:
            w.run_once()
        clock.advance(TTL / 3)


def held(workers: list[IngestWorker]) -> list[list[str]]:
    return [w.partitions for w in workers]


def epochs(db: Db) -> dict[str, int]:
    with db.storage.engine.connect() as conn:
        return {p: int(e) for p, e in conn.execute(sa.select(leases.c.partition, leases.c.epoch))}


def assert_counted_once(db: Db, messages: int) -> None:
    stats = db.store.stats()
    assert (stats["ingested"], stats["duplicates"]) == (messages, 0)
    assert db.count("telemetry_inference") == ROWS * messages
    assert db.count("telemetry_health") == messages
    assert db.count("telemetry_seen") == messages
    cohort = db.store.cohort("", "rel-2", datetime(2020, 1, 1, tzinfo=UTC))
    assert cohort.inferences == ROWS * messages


def assert_fair(workers: list[IngestWorker]) -> None:
    parts = held(workers)
    owned = [p for ps in parts for p in ps]
    assert sorted(owned) == sorted(str(p) for p in range(PARTITIONS)), parts
    base = PARTITIONS // len(workers)
    assert all(base <= len(ps) <= base + 1 for ps in parts), parts


def test_two_then_three_workers_share_eight_partitions_fairly(db: Db) -> None:
    f, clock = fleet(), Clock()
    workers = [leased(f, db, clock, name) for name in ("w-a", "w-b")]
    rounds(workers, clock)
    assert_fair(workers)
    assert [len(ps) for ps in held(workers)] == [4, 4]
    send(f, 40)
    rounds(workers, clock, 1)
    assert_counted_once(db, 40)

    workers.append(leased(f, db, clock, "w-c"))  # a third process starts: the others give up
    rounds(workers, clock)
    assert_fair(workers)
    assert sorted(len(ps) for ps in held(workers)) == [2, 3, 3]
    send(f, 40, start=40)
    rounds(workers, clock, 1)
    assert_counted_once(db, 80)
    assert all(w.partitions for w in workers)


def test_a_clean_stop_hands_the_partitions_over_at_once(db: Db) -> None:
    f, clock = fleet(), Clock()
    a, b = leased(f, db, clock, "w-a"), leased(f, db, clock, "w-b")
    rounds([a, b], clock)
    a.close()
    assert a.partitions == []
    clock.advance(TTL / 3)  # one renewal period, far less than a ttl
    b.run_once()
    assert b.partitions == [str(p) for p in range(PARTITIONS)]


def test_a_worker_that_stops_renewing_loses_its_partitions_to_another(db: Db) -> None:
    f, clock = fleet(), Clock()
    a, b = leased(f, db, clock, "w-a", batch=7), leased(f, db, clock, "w-b", batch=7)
    rounds([a, b], clock)
    send(f, 60)
    a.run_once()  # part of a's share committed, the rest still in the feed
    b.run_once()
    a_parts, before = a.partitions, epochs(db)
    committed = db.store.positions(a_parts)
    assert any(s >= 0 for s in committed.values())

    clock.advance(TTL / 3 * 2)
    b.run_once()  # a's leases have not expired yet: b keeps its share
    assert b.partitions != [str(p) for p in range(PARTITIONS)]
    clock.advance(TTL)  # a stopped renewing (paused, crashed): its leases are past their ttl
    b.run_once()
    assert b.partitions == [str(p) for p in range(PARTITIONS)]
    after = epochs(db)
    assert all(after[p] == before[p] + 1 for p in a_parts)  # a takeover moves the epoch
    b.drain()
    assert_counted_once(db, 60)


def test_a_stale_commit_after_takeover_is_refused_and_writes_nothing(db: Db) -> None:
    f, clock = fleet(), Clock()
    a, b = leased(f, db, clock, "w-a"), leased(f, db, clock, "w-b")
    a.run_once()  # a alone: it claims all eight
    send(f, 30)
    stale = a.receive()  # a has the batch in hand ... and pauses past its ttl
    assert len(stale.events) == 30
    clock.advance(TTL * 2)
    taken = b.receive()  # b takes over and reads the same events from the committed position
    assert b.partitions == [str(p) for p in range(PARTITIONS)]
    assert [e.sequence for e in taken.events] == [e.sequence for e in stale.events]

    tables = ("telemetry_inference", "telemetry_seen", "telemetry_rollups", "telemetry_partitions")
    counts = {t: db.count(t) for t in tables}
    report = a.commit(stale)  # before b committed: only the fence can stop it
    assert report.lost == tuple(str(p) for p in range(PARTITIONS))
    assert report.messages == 0
    assert {t: db.count(t) for t in tables} == counts
    assert a.partitions == []
    with pytest.raises(LeaseLostError) as refused:
        db.store.commit(
            [],
            [],
            positions={"0": 0},
            last_sequences={},
            groups_of=lambda _d: (),
            bucket_ms=60_000,
            now=clock(),
            fence=stale.fence,
        )
    assert refused.value.partitions == ["0"]

    assert b.commit(taken).messages == 30
    assert_counted_once(db, 30)  # no duplicates: the seen set had nothing to catch


FORGED = [
    pytest.param("w-z", {"0": 1, "1": 1}, ["0", "1"], id="another-owner"),
    pytest.param("w-a", {"0": 2, "1": 1}, ["0"], id="a-later-epoch"),
    pytest.param("w-a", {"0": 0, "1": 1}, ["0"], id="an-earlier-epoch"),
    pytest.param("w-a", {"0": 1}, ["1"], id="a-partition-not-fenced"),
    pytest.param("w-a", {"0": 1, "1": 1, "9": 1}, [], id="extra-fenced-partitions-are-fine"),
]


@pytest.mark.parametrize(("owner", "fenced", "lost"), FORGED)
def test_a_commit_whose_fence_does_not_match_the_leases_is_refused(
    db: Db, owner: str, fenced: dict[str, int], lost: list[str]
) -> None:
    f, clock = fleet(), Clock()
    a = leased(f, db, clock, "w-a")
    a.run_once()  # claims all eight under epoch 1
    assert epochs(db) == dict.fromkeys((str(p) for p in range(PARTITIONS)), 1)

    def commit() -> None:
        db.store.commit(
            [],
            [],
            positions={"0": 0, "1": 0},
            last_sequences={},
            groups_of=lambda _d: (),
            bucket_ms=60_000,
            now=clock(),
            fence=Fence(owner, fenced),
        )

    if not lost:
        commit()
        assert db.count("telemetry_partitions") == 2
        return
    with pytest.raises(LeaseLostError) as refused:
        commit()
    assert refused.value.partitions == lost
    assert db.count("telemetry_partitions") == 0


def test_static_partitions_and_leases_are_exclusive(db: Db) -> None:
    f = fleet()
    with pytest.raises(ValueError, match="not both"):
        IngestWorker(f.source, db.store, partitions=["0"], leases=LeaseConfig(worker_id="w"))


def test_a_worker_holds_one_received_batch_at_a_time(db: Db) -> None:
    f, clock = fleet(), Clock()
    a = leased(f, db, clock, "w-a")
    send(f, 5)
    first = a.receive()
    with pytest.raises(InFlightError):
        a.receive()  # it would read past the batch in hand
    assert a.commit(first).messages == 5
    with pytest.raises(InFlightError):
        a.commit(first)  # once only
    assert_counted_once(db, 5)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_interleavings_of_workers_and_crashes_count_every_message_once(
    db: Db, seed: int
) -> None:
    """Workers start, step, pause mid-batch, stall past ttls, crash and stop at random; at the
    end every message is counted once and the seen set caught nothing. (With the fence taken
    out of the commit, each seed ends with 3 to 11 duplicates that only the seen set caught.)"""
    rng = random.Random(f"leases/{seed}")
    f, clock = fleet(), Clock()
    names = (f"w-{n}" for n in range(1000))
    workers = [leased(f, db, clock, next(names), batch=rng.randint(1, 9)) for _ in range(3)]
    pending: dict[int, Received] = {}  # worker id() -> the batch it holds, paused mid-batch
    sent = 0
    for _ in range(200 if db.name == "sqlite" else 120):
        action = rng.choices(
            ["send", "step", "hold", "tick", "pause", "crash", "start", "stop"],
            weights=[8, 10, 6, 3, 4, 1, 2, 1],
        )[0]
        if action == "send":
            count = rng.randint(1, 6)
            send(f, count, start=sent)
            sent += count
        elif action in ("step", "hold") and workers:
            w = rng.choice(workers)
            if id(w) in pending:  # the paused worker wakes up and commits what it holds
                w.commit(pending.pop(id(w)))
            elif action == "step":
                w.run_once()
            elif (received := w.receive()).events:  # the commit waits while others go on
                pending[id(w)] = received
            else:
                w.commit(received)
        elif action == "tick":
            clock.advance(TTL / rng.choice([3, 6, 12]))
        elif action == "pause":  # everyone stalls past a ttl (a GC pause, a slow disk)
            clock.advance(TTL + timedelta(seconds=1))
        elif action == "crash" and len(workers) > 1:  # gone without a word, with what it held
            pending.pop(id(workers.pop(rng.randrange(len(workers)))), None)
        elif action == "start" and len(workers) < 4:
            workers.append(leased(f, db, clock, next(names), batch=rng.randint(1, 9)))
        elif action == "stop" and len(workers) > 1:
            gone = workers.pop(rng.randrange(len(workers)))
            if id(gone) in pending:
                gone.commit(pending.pop(id(gone)))
            gone.close()
    for w in workers:  # the paused commits land last: any that were overtaken are refused
        if id(w) in pending:
            w.commit(pending.pop(id(w)))
    workers = workers or [leased(f, db, clock, next(names))]
    for _ in range(20):
        if db.store.stats()["ingested"] == sent:
            break
        clock.advance(TTL + timedelta(seconds=1))
        for w in workers:
            w.drain()
    assert_counted_once(db, sent)
