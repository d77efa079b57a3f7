"""The agent's telemetry buffer: bounded, oldest dropped first and counted, and a batch sent
again after a failure keeps its sequence number (so the service deduplicates it)."""

from __future__ import annotations

from device_agent.protocol import HealthRecord, InferenceRecord, encode_batch, message_properties
from device_agent.telemetry_buffer import TelemetryBuffer


def _record(i: int) -> InferenceRecord:
    return InferenceRecord("m4-0", "kws", "2.0.0", 1_700_000_000_000 + i, 800, 0.9, "yes", None)


def test_unacknowledged_batch_is_offered_again_with_the_same_id() -> None:
    buffer = TelemetryBuffer("dev-1", capacity=100)
    for i in range(10):
        buffer.add(_record(i))
    first = buffer.batch("r1")
    assert first is not None
    again = buffer.batch("r1")  # the send failed; nothing acknowledged
    assert again is first and message_properties(again)["$.mid"] == "dev-1:1"
    buffer.acknowledge(first)
    assert len(buffer) == 0 and buffer.next_seq == 2
    assert buffer.batch("r1") is None


def test_full_buffer_drops_the_oldest_and_counts_them() -> None:
    buffer = TelemetryBuffer("dev-1", capacity=5)
    for i in range(8):
        buffer.add(_record(i))
    assert len(buffer) == 5 and buffer.dropped == 3
    batch = buffer.batch(None)
    assert batch is not None
    assert [r.ts_ms for r in batch.inference] == [1_700_000_000_000 + i for i in range(3, 8)]


def test_batches_respect_the_size_limit_and_drain_in_order() -> None:
    buffer = TelemetryBuffer("dev-1", capacity=10_000, batch_limit=4_000)
    for i in range(500):
        buffer.add(_record(i))
    buffer.add(HealthRecord(1, 2, 3, 4, 5, 2))
    seen = []
    while (batch := buffer.batch("r1")) is not None:
        assert len(encode_batch(batch)) <= 4_000
        seen.extend(r.ts_ms for r in batch.inference)
        buffer.acknowledge(batch)
    assert seen == sorted(seen) and len(seen) == 500
    assert buffer.next_seq > 5  # several batches, each within the limit


def test_a_drop_while_a_batch_is_pending_rebuilds_it() -> None:
    buffer = TelemetryBuffer("dev-1", capacity=3)
    for i in range(3):
        buffer.add(_record(i))
    pending = buffer.batch(None)
    buffer.add(_record(3))  # the head of the pending batch is dropped
    fresh = buffer.batch(None)
    assert pending is not None and fresh is not None and fresh is not pending
    assert fresh.seq == pending.seq  # never acknowledged, so the same sequence number
    buffer.acknowledge(pending)  # a stale acknowledgement changes nothing
    assert len(buffer) == 3
