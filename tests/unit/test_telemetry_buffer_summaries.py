"""The buffer's summary mode: inference results become per-interval summaries per core and model
version, sent before raw rows in the same sequence space; raw rows are sampled (0, a share, 1);
health and events always flow; open summaries are bounded; an unacknowledged summary batch is
offered again with the same id."""

from __future__ import annotations

import random

import pytest

from device_agent.protocol.summary import SummaryBatch, decode_summaries
from device_agent.protocol.telemetry import (
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
    decode_batch,
)
from device_agent.telemetry_buffer import TelemetryBuffer, encode_message

T0 = 1_700_000_040_000  # a multiple of 60 s


def _inference(i: int, core: str = "m4-0", version: str = "2.0.0") -> InferenceRecord:
    return InferenceRecord(core, "kws", version, T0 + i * 1000, 800 + i, 0.9, "yes", i % 7 == 0)


def _drain(buffer: TelemetryBuffer) -> list[TelemetryBatch | SummaryBatch]:
    sent = []
    while (batch := buffer.batch("r1")) is not None:
        body, properties = encode_message(batch)
        assert properties["$.mid"] == f"dev-1:{batch.seq}"
        if isinstance(batch, SummaryBatch):
            assert decode_summaries(body, device_id="dev-1") == batch
        else:
            assert decode_batch(body, device_id="dev-1") == batch
        buffer.acknowledge(batch)
        sent.append(batch)
    return sent


def test_summaries_per_interval_core_and_version_then_raw_rows_none() -> None:
    buffer = TelemetryBuffer("dev-1", 1000, summary_interval_ms=60_000, raw_sample_rate=0.0)
    for i in range(120):  # two minutes, two cores, two versions
        buffer.add(_inference(i, core=f"m4-{i % 2}", version="2.0.0" if i < 90 else "2.1.0"))
    buffer.add(HealthRecord(T0, 1, 2, 0, 0, 2))
    buffer.add(EventRecord(T0, "crash", "m4-0", "r1", -9, "killed"))
    buffer.close_intervals(T0 + 60_000)  # the first minute ended, the second not yet
    first = _drain(buffer)
    assert isinstance(first[0], SummaryBatch) and isinstance(first[1], TelemetryBatch)
    assert {(s.core, s.model_version, s.start_ms) for s in first[0].summaries} == {
        ("m4-0", "2.0.0", T0),
        ("m4-1", "2.0.0", T0),
    }
    assert sum(s.count for s in first[0].summaries) == 60
    assert first[1].inference == () and len(first[1].health) == 1 and len(first[1].events) == 1
    buffer.close_intervals(T0 + 120_000)
    second = _drain(buffer)
    assert [b.seq for b in first + second] == [1, 2, 3]
    counts = {(s.core, s.model_version): s.count for s in second[0].summaries}
    assert counts == {
        ("m4-0", "2.0.0"): 15,
        ("m4-1", "2.0.0"): 15,
        ("m4-0", "2.1.0"): 15,
        ("m4-1", "2.1.0"): 15,
    }


@pytest.mark.parametrize(
    ("rate", "low", "high"), [(0.0, 0, 0), (0.25, 150, 350), (1.0, 1000, 1000)]
)
def test_raw_rows_are_sampled(rate: float, low: int, high: int) -> None:
    rng = random.Random(11)
    buffer = TelemetryBuffer(
        "dev-1", 5000, summary_interval_ms=60_000, raw_sample_rate=rate, sample=rng.random
    )
    for i in range(1000):
        buffer.add(_inference(i % 59))
    buffer.close_intervals(T0 + 60_000)
    sent = _drain(buffer)
    raw = sum(len(b.inference) for b in sent if isinstance(b, TelemetryBatch))
    assert low <= raw <= high
    assert sum(s.count for b in sent if isinstance(b, SummaryBatch) for s in b.summaries) == 1000


def test_unacknowledged_summary_batch_is_offered_again_with_the_same_id() -> None:
    buffer = TelemetryBuffer("dev-1", 100, summary_interval_ms=60_000, raw_sample_rate=0.0)
    for i in range(10):
        buffer.add(_inference(i))
    buffer.close_intervals(T0 + 60_000)
    first = buffer.batch("r1")
    assert isinstance(first, SummaryBatch) and buffer.batch("r1") is first
    buffer.acknowledge(first)
    assert buffer.batch("r1") is None and buffer.next_seq == 2


def test_open_summaries_are_bounded() -> None:
    buffer = TelemetryBuffer(
        "dev-1", 100, summary_interval_ms=60_000, raw_sample_rate=0.0, max_open=3
    )
    for v in range(10):
        buffer.add(_inference(1, version=f"1.{v}.0"))
    assert len(buffer) == 7  # seven closed early, three still open
    buffer.close_intervals(T0 + 60_000)
    sent = _drain(buffer)
    assert sum(len(b.summaries) for b in sent if isinstance(b, SummaryBatch)) == 10


def test_summary_batches_respect_the_size_limit() -> None:
    buffer = TelemetryBuffer(
        "dev-1", 1000, batch_limit=2_000, summary_interval_ms=1000, raw_sample_rate=0.0
    )
    for i in range(300):
        buffer.add(_inference(i))
    buffer.close_intervals(T0 + 10**6)
    sent = _drain(buffer)
    assert len(sent) > 1
    assert all(len(encode_message(b)[0]) <= 2_000 for b in sent)
    assert sum(s.count for b in sent if isinstance(b, SummaryBatch) for s in b.summaries) == 300


@pytest.mark.parametrize(
    "kwargs",
    [
        {"summary_interval_ms": -1},
        {"raw_sample_rate": 1.5},
        {"max_open": 0},
        {"summary_interval_ms": 1000, "raw_sample_rate": 0.5},
    ],
    ids=["negative-interval", "rate-above-one", "no-open", "share-without-source"],
)
def test_bad_configuration_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TelemetryBuffer("dev-1", 10, **kwargs)  # type: ignore[arg-type]
