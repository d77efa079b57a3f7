"""The telemetry source port: a partitioned, checkpointed event feed (Event Hubs' shape).

A worker `seek`s each partition it owns to the position its database committed, `receive`s
events, commits them to the database, then `checkpoint`s the source. After a failed commit it
seeks back, so events are delivered at least once; the database's dedupe set makes the effect
exactly once.

Invariants of every adapter:
- Within a partition, `receive` returns events in increasing sequence order, each after the
  partition's position, and moves the position to the last one returned.
- `seek(p, s)` makes the next `receive` start after sequence `s` (-1: from the beginning).
- `checkpoint` only records progress (for other consumers and restarts); it never moves the
  read position. Failures raise `SourceError`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.telemetry._errors import SourceConfigError, SourceError

__all__ = ["MemorySource", "SourceEvent", "TelemetrySource"]


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One feed event: `device_id` and `message_id` come from the hub's (system) properties."""

    partition: str
    sequence: int
    enqueued_ms: int
    body: bytes
    device_id: str | None
    message_id: str | None = None
    properties: Mapping[str, str | None] = field(default_factory=dict)


class TelemetrySource(Protocol):
    def partitions(self) -> list[str]:
        """All partition ids of the feed."""
        ...

    def seek(self, partition: str, after_sequence: int) -> None:
        """Continue the partition after `after_sequence` (-1 for its beginning)."""
        ...

    def receive(self, partitions: Sequence[str], max_count: int) -> list[SourceEvent]:
        """Up to `max_count` events of the given partitions; [] when there is nothing new."""
        ...

    def checkpoint(self, partition: str, sequence: int) -> None:
        """Record that everything up to `sequence` is committed."""
        ...

    def last_sequence(self, partition: str) -> int | None:
        """The newest sequence in the partition if the source knows it (for lag), else None."""
        ...


class MemorySource:
    """An in-memory feed with fault injection: checkpoint failures, and appends at any time."""

    def __init__(self, partition_count: int = 4) -> None:
        if partition_count < 1:
            raise SourceConfigError("a feed needs at least one partition")
        self._events: dict[str, list[SourceEvent]] = {str(p): [] for p in range(partition_count)}
        self._position: dict[str, int] = dict.fromkeys(self._events, -1)
        self.checkpoints: dict[str, int] = {}
        self.fail_checkpoints = 0  # how many coming checkpoint calls fail

    def reader(self) -> MemorySource:
        """Another consumer of the same events with its own read positions and fault counter,
        as each worker process has its own client of one feed (checkpoints are shared)."""
        other = MemorySource.__new__(MemorySource)
        other._events = self._events
        other._position = dict.fromkeys(self._events, -1)
        other.checkpoints = self.checkpoints
        other.fail_checkpoints = 0
        return other

    def partition_for(self, device_id: str) -> str:
        return str(zlib.crc32(device_id.encode()) % len(self._events))

    def append(
        self,
        device_id: str | None,
        body: bytes,
        *,
        enqueued_ms: int,
        message_id: str | None = None,
        partition: str | None = None,
    ) -> SourceEvent:
        part = partition if partition is not None else self.partition_for(device_id or "")
        events = self._events[part]
        event = SourceEvent(part, len(events), enqueued_ms, body, device_id, message_id)
        events.append(event)
        return event

    def partitions(self) -> list[str]:
        return list(self._events)

    def _check(self, partition: str) -> None:
        if partition not in self._events:
            raise SourceConfigError(f"partition {partition!r} does not exist")

    def seek(self, partition: str, after_sequence: int) -> None:
        self._check(partition)
        self._position[partition] = after_sequence

    def receive(self, partitions: Sequence[str], max_count: int) -> list[SourceEvent]:
        out: list[SourceEvent] = []
        for partition in partitions:
            self._check(partition)
            start = self._position[partition] + 1
            batch = self._events[partition][start : start + max_count - len(out)]
            if batch:
                self._position[partition] = batch[-1].sequence
                out.extend(batch)
            if len(out) >= max_count:
                break
        return out

    def checkpoint(self, partition: str, sequence: int) -> None:
        self._check(partition)
        if self.fail_checkpoints > 0:
            self.fail_checkpoints -= 1
            raise SourceError(f"checkpoint of partition {partition} failed (injected)")
        self.checkpoints[partition] = sequence

    def last_sequence(self, partition: str) -> int | None:
        self._check(partition)
        return len(self._events[partition]) - 1
