"""The agent's bounded telemetry buffer: records wait here until the hub acknowledges them.

At-least-once delivery: a batch is built from the oldest records without removing them; only
after the hub's PUBACK are they dropped and the batch sequence number advanced, so a batch that
is sent again after a failure carries the same message id and the service deduplicates it. When
the buffer is full the oldest records are dropped first, and counted.
"""

from __future__ import annotations

import threading
from collections import deque

from device_agent.protocol.telemetry import (
    BatchBuilder,
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
)

__all__ = ["TelemetryBuffer"]

Record = InferenceRecord | HealthRecord | EventRecord


class TelemetryBuffer:
    def __init__(
        self, device_id: str, capacity: int, *, next_seq: int = 1, batch_limit: int | None = None
    ) -> None:
        self.device_id = device_id
        self.capacity = capacity
        self.next_seq = next_seq
        self.dropped = 0  # since the last acknowledged batch
        self.dropped_total = 0
        self._records: deque[Record] = deque()
        self._batch_limit = batch_limit
        self._lock = threading.Lock()
        self._pending: tuple[TelemetryBatch, int] | None = None  # batch, records it holds

    def add(self, record: Record) -> None:
        with self._lock:
            if len(self._records) >= self.capacity:
                self._records.popleft()
                self.dropped += 1
                self.dropped_total += 1
                if self._pending is not None:  # the batch under way lost its head; rebuild
                    self._pending = None
            self._records.append(record)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def batch(self, release: str | None) -> TelemetryBatch | None:
        """The next batch to send (the same one again until it is acknowledged)."""
        with self._lock:
            if self._pending is not None:
                return self._pending[0]
            if not self._records:
                return None
            kwargs = {"limit": self._batch_limit} if self._batch_limit else {}
            builder = BatchBuilder(self.device_id, self.next_seq, release, **kwargs)
            count = 0
            for record in self._records:
                if not builder.add(record):
                    break
                count += 1
            batch = builder.build()
            self._pending = (batch, count)
            return batch

    def acknowledge(self, batch: TelemetryBatch) -> None:
        with self._lock:
            if self._pending is None or self._pending[0] is not batch:
                return
            for _ in range(self._pending[1]):
                self._records.popleft()
            self._pending = None
            self.next_seq += 1
            self.dropped = 0
