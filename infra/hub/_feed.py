"""The telemetry feed: the mock of IoT Hub's Event Hubs-compatible endpoint.

Every accepted device-to-cloud message becomes one `FeedEvent` in one partition, chosen by
device id (so one device's messages stay in order), with a per-partition sequence number that
starts at 0, the enqueued time, the device id, and the system and application properties.
Consumers read a partition from a sequence number and commit checkpoints per consumer group, so
a restarted consumer resumes after what it committed. The feed is a SQLite file
(`DATA/feed.sqlite`): the hub appends, and any process may open it to read and checkpoint.

Invariants:
- Sequence numbers in a partition are dense and increasing; `append` stores a whole batch in
  one transaction, so after a crash a batch is either entirely there or entirely absent.
- The partition of a device is `crc32(device id) % partition_count`, fixed for the file's life.
- A checkpoint only moves where the consumer says; reading never moves it.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.hub._errors import HubConfigError, HubStorageError
from infra.hub._files import private_file

__all__ = ["FeedConsumer", "FeedEvent", "NewEvent", "TelemetryFeed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    partition INTEGER NOT NULL, seq INTEGER NOT NULL, enqueued_ms INTEGER NOT NULL,
    device_id TEXT NOT NULL, body BLOB NOT NULL, properties TEXT NOT NULL,
    system_properties TEXT NOT NULL, PRIMARY KEY (partition, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer_group TEXT NOT NULL, partition INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, partition));
"""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What the hub appends: one accepted telemetry message."""

    device_id: str
    body: bytes
    properties: dict[str, str | None]
    system_properties: dict[str, str]
    enqueued_ms: int


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event as a consumer reads it (the fields of an Event Hubs `EventData`)."""

    partition_id: int
    sequence_number: int
    enqueued_ms: int
    device_id: str
    body: bytes
    properties: dict[str, str | None]
    system_properties: dict[str, str]

    @property
    def enqueued_time(self) -> datetime:
        return datetime.fromtimestamp(self.enqueued_ms / 1000, tz=UTC)

    def body_as_json(self) -> Any:
        return json.loads(self.body)


class TelemetryFeed:
    """A partitioned, checkpointed event log in one SQLite file (or in memory)."""

    def __init__(self, db: sqlite3.Connection, partition_count: int) -> None:
        self._db = db
        self.partition_count = partition_count
        self._next_seq: list[int] | None = None

    @classmethod
    def open(cls, path: Path | str, partition_count: int | None = None) -> TelemetryFeed:
        """Open (or create) the feed; `partition_count` is fixed when the file is created."""
        try:
            private_file(path)
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'partition_count'").fetchone()
            if row is None:
                if partition_count is None:
                    raise HubConfigError(f"{path} is not a telemetry feed (no partition count)")
                db.execute("INSERT INTO meta VALUES ('partition_count', ?)", (partition_count,))
                stored = partition_count
            else:
                stored = int(row[0])
        except (sqlite3.Error, OSError) as exc:
            raise HubStorageError(f"cannot open the telemetry feed {path}: {exc}") from exc
        if partition_count is not None and partition_count != stored:
            raise HubConfigError(
                f"the feed {path} has {stored} partitions, not {partition_count}; "
                "partitions are fixed when a feed is created"
            )
        return cls(db, stored)

    @classmethod
    def in_memory(cls, partition_count: int = 4) -> TelemetryFeed:
        return cls.open(":memory:", partition_count)

    def close(self) -> None:
        self._db.close()

    @property
    def partition_ids(self) -> list[int]:
        return list(range(self.partition_count))

    def partition_for(self, device_id: str) -> int:
        return zlib.crc32(device_id.encode("utf-8")) % self.partition_count

    # --- writer (the hub) -------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent]) -> list[FeedEvent]:
        """Store a batch in one transaction and return it with partitions and sequence numbers."""
        if self._next_seq is None:
            self._next_seq = [self.last_sequence(p) + 1 for p in self.partition_ids]
        next_seq = list(self._next_seq)
        stored: list[FeedEvent] = []
        for event in events:
            partition = self.partition_for(event.device_id)
            stored.append(
                FeedEvent(
                    partition,
                    next_seq[partition],
                    event.enqueued_ms,
                    event.device_id,
                    event.body,
                    event.properties,
                    event.system_properties,
                )
            )
            next_seq[partition] += 1
        rows = [
            (
                e.partition_id,
                e.sequence_number,
                e.enqueued_ms,
                e.device_id,
                e.body,
                json.dumps(e.properties),
                json.dumps(e.system_properties),
            )
            for e in stored
        ]
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise HubStorageError(f"telemetry feed append failed: {exc}") from exc
        self._next_seq = next_seq
        return stored

    # --- readers ----------------------------------------------------------------------------------

    def last_sequence(self, partition: int) -> int:
        """The newest sequence number in the partition, -1 when it is empty."""
        try:
            row = self._db.execute(
                "SELECT MAX(seq) FROM events WHERE partition = ?", (partition,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise HubStorageError(f"telemetry feed read failed: {exc}") from exc
        return -1 if row[0] is None else int(row[0])

    def read(self, partition: int, after: int = -1, max_count: int = 100) -> list[FeedEvent]:
        """Events of the partition with sequence number greater than `after`, oldest first."""
        if partition not in range(self.partition_count):
            raise HubConfigError(f"partition {partition} does not exist")
        try:
            rows = self._db.execute(
                "SELECT seq, enqueued_ms, device_id, body, properties, system_properties "
                "FROM events WHERE partition = ? AND seq > ? ORDER BY seq LIMIT ?",
                (partition, after, max_count),
            ).fetchall()
        except sqlite3.Error as exc:
            raise HubStorageError(f"telemetry feed read failed: {exc}") from exc
        return [
            FeedEvent(partition, r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]))
            for r in rows
        ]

    def checkpoint(self, consumer_group: str, partition: int) -> int | None:
        try:
            row = self._db.execute(
                "SELECT seq FROM checkpoints WHERE consumer_group = ? AND partition = ?",
                (consumer_group, partition),
            ).fetchone()
        except sqlite3.Error as exc:
            raise HubStorageError(f"checkpoint read failed: {exc}") from exc
        return None if row is None else int(row[0])

    def commit_checkpoint(self, consumer_group: str, partition: int, sequence_number: int) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                (consumer_group, partition, sequence_number),
            )
        except sqlite3.Error as exc:
            raise HubStorageError(f"checkpoint commit failed: {exc}") from exc


@dataclass(slots=True)
class FeedConsumer:
    """Reads every partition from its committed checkpoint on; `commit` moves the checkpoints."""

    feed: TelemetryFeed
    consumer_group: str = "$Default"
    _position: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for partition in self.feed.partition_ids:
            committed = self.feed.checkpoint(self.consumer_group, partition)
            self._position[partition] = -1 if committed is None else committed

    def receive(self, max_count: int = 100) -> list[FeedEvent]:
        """Up to `max_count` events after the current position, across partitions."""
        events: list[FeedEvent] = []
        for partition in self.feed.partition_ids:
            if len(events) >= max_count:
                break
            batch = self.feed.read(partition, self._position[partition], max_count - len(events))
            if batch:
                self._position[partition] = batch[-1].sequence_number
                events.extend(batch)
        return events

    def commit(self) -> None:
        """Checkpoint everything received so far."""
        for partition, position in self._position.items():
            if position >= 0:
                self.feed.commit_checkpoint(self.consumer_group, partition, position)
