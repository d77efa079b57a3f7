"""The agent's bounded telemetry buffer: records wait here until the hub acknowledges them.

At-least-once delivery: a batch is built from the oldest records without removing them; only
after the hub's PUBACK are they dropped and the batch sequence number advanced, so a batch that
is sent again after a failure carries the same message id and the service deduplicates it. When
the buffer is full the oldest records are dropped first, and counted.

Summaries (`summary_interval_ms` > 0): inference results are added into one open summary per
(core, model id, model version, interval) keyed by the record's own timestamp; `close_intervals`
(called with the agent's clock) closes the intervals that have ended, and closed summaries are
sent before raw rows, in the same sequence space. Raw inference rows are then kept only for a
sampled share (`raw_sample_rate`, 0 to 1, drawn from the injected `sample`). Health records and
events always flow as rows. At most `max_open` summaries are open; past that the oldest closes
early (its interval ends where it was, so the service still keys it uniquely).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from device_agent.protocol.summary import (
    SummaryAccumulator,
    SummaryBatch,
    SummaryRecord,
    encode_summaries,
    summary_properties,
)
from device_agent.protocol.telemetry import (
    MAX_BATCH_BYTES,
    BatchBuilder,
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
    encode_batch,
    message_properties,
)

__all__ = ["Batch", "TelemetryBuffer", "encode_message"]

Record = InferenceRecord | HealthRecord | EventRecord
Batch = TelemetryBatch | SummaryBatch
_SUMMARY_OVERHEAD = 200


def encode_message(batch: Batch) -> tuple[bytes, dict[str, str]]:
    """The D2C body and properties of either kind of batch."""
    if isinstance(batch, SummaryBatch):
        return encode_summaries(batch), summary_properties(batch)
    return encode_batch(batch), message_properties(batch)


class TelemetryBuffer:
    def __init__(
        self,
        device_id: str,
        capacity: int,
        *,
        next_seq: int = 1,
        batch_limit: int | None = None,
        summary_interval_ms: int = 0,
        raw_sample_rate: float = 1.0,
        sample: Callable[[], float] | None = None,
        max_open: int = 16,
    ) -> None:
        if summary_interval_ms < 0 or not 0.0 <= raw_sample_rate <= 1.0 or max_open < 1:
            raise ValueError("summary interval >= 0, sample rate in [0, 1], max_open >= 1")
        if summary_interval_ms and 0.0 < raw_sample_rate < 1.0 and sample is None:
            raise ValueError("a raw sample rate strictly between 0 and 1 needs a sample source")
        self.device_id = device_id
        self.capacity = capacity
        self.next_seq = next_seq
        self.dropped = 0  # since the last acknowledged batch
        self.dropped_total = 0
        self.summary_interval_ms = summary_interval_ms
        self.raw_sample_rate = raw_sample_rate
        self._sample = sample
        self._max_open = max_open
        self._records: deque[Record] = deque()
        self._open: dict[tuple[str, str, str, int], SummaryAccumulator] = {}
        self._closed: deque[SummaryRecord] = deque()
        self._batch_limit = batch_limit
        self._lock = threading.Lock()
        self._pending: tuple[Batch, int] | None = None  # batch, records it holds

    def add(self, record: Record) -> None:
        with self._lock:
            if isinstance(record, InferenceRecord) and self.summary_interval_ms:
                self._summarise(record)
                if not self._sampled():
                    return
            if len(self._records) >= self.capacity:
                self._records.popleft()
                self._drop()
                if self._pending is not None and isinstance(self._pending[0], TelemetryBatch):
                    self._pending = None  # the batch under way lost its head; rebuild
            self._records.append(record)

    def _drop(self) -> None:
        self.dropped += 1
        self.dropped_total += 1

    def _sampled(self) -> bool:
        if self.raw_sample_rate >= 1.0:
            return True
        if self.raw_sample_rate <= 0.0 or self._sample is None:
            return False
        return self._sample() < self.raw_sample_rate

    def _summarise(self, record: InferenceRecord) -> None:
        width = self.summary_interval_ms
        start = record.ts_ms // width * width
        key = (record.core, record.model_id, record.model_version, start)
        summary = self._open.get(key)
        if summary is None:
            if len(self._open) >= self._max_open:
                self._close(next(iter(self._open)))
            summary = SummaryAccumulator(*key, width)
            self._open[key] = summary
        summary.add(record)

    def _close(self, key: tuple[str, str, str, int]) -> None:
        summary = self._open.pop(key)
        if summary.count:
            if len(self._closed) >= self.capacity:
                self._closed.popleft()
                self._drop()
                if self._pending is not None and isinstance(self._pending[0], SummaryBatch):
                    self._pending = None
            self._closed.append(summary.build())

    def close_intervals(self, now_ms: int) -> None:
        """Close the open summaries whose interval ended at or before `now_ms`."""
        with self._lock:
            for key in [k for k, s in self._open.items() if s.start_ms + s.interval_ms <= now_ms]:
                self._close(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records) + len(self._closed)

    def batch(self, release: str | None) -> Batch | None:
        """The next batch to send (the same one again until it is acknowledged)."""
        with self._lock:
            if self._pending is not None:
                return self._pending[0]
            if self._closed:
                self._pending = self._summary_batch(release)
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
            if self.summary_interval_ms:
                batch = replace(batch, sampled=True)  # summaries count these inferences
            self._pending = (batch, count)
            return batch

    def _summary_batch(self, release: str | None) -> tuple[SummaryBatch, int]:
        limit = (self._batch_limit or MAX_BATCH_BYTES) - _SUMMARY_OVERHEAD - len(self.device_id)
        limit -= len(release or "")
        size, chosen = 0, list[SummaryRecord]()
        for summary in self._closed:
            row = len(json.dumps(summary.row(), separators=(",", ":"))) + 1
            if chosen and size + row > limit:
                break
            size += row
            chosen.append(summary)
        return SummaryBatch(self.device_id, self.next_seq, release, tuple(chosen)), len(chosen)

    def acknowledge(self, batch: Batch) -> None:
        with self._lock:
            if self._pending is None or self._pending[0] is not batch:
                return
            source: deque[SummaryRecord] | deque[Record] = (
                self._closed if isinstance(batch, SummaryBatch) else self._records
            )
            for _ in range(self._pending[1]):
                source.popleft()
            self._pending = None
            self.next_seq += 1
            self.dropped = 0
