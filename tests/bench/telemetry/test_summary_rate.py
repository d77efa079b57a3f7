"""Ingest of per-interval summaries against raw rows standing for the same inferences.

The same inference rows (200 a device-minute) are sent once as raw batches and once as
`tinyfleet.summary/1` batches (one summary per device-minute, as the agent's buffer builds them),
through the mock hub's feed file -> `FeedSource` -> `IngestWorker` into SQLite and PostgreSQL.
Printed: records (raw rows or summaries) per second, inferences represented per second, and the
ratio of inferences per second summaries / raw. Quick by default; TINYFLEET_BENCH_FULL=1 for more.
Figures are printed, not asserted (beyond both paths storing the same inference count).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device_agent.protocol.summary import SummaryBatch, encode_summaries, summary_properties
from device_agent.protocol.telemetry import (
    InferenceRecord,
    TelemetryBatch,
    encode_batch,
    message_id,
    message_properties,
)
from device_agent.telemetry_buffer import TelemetryBuffer
from infra.hub import TelemetryFeed
from infra.hub._feed import NewEvent
from infra.telemetry_source import FeedSource
from service.domain.rollups import merge_all
from service.storage import SqlStorage, upgrade
from service.telemetry import IngestWorker, TelemetryStore
from service.telemetry import _schema as t
from tests.bench.conftest import FULL
from tests.contract.storage.conftest import pg_database, pg_url  # noqa: F401 - fixtures

DEVICE_MINUTES = 2000 if FULL else 300
PER_MINUTE = 200
T0_MS = 1_795_000_020_000 // 60_000 * 60_000


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        yield str(request.getfixturevalue("pg_url"))
    else:
        yield f"sqlite:///{tmp_path / 'bench.db'}"


def _raw(count: int) -> list[TelemetryBatch]:
    rng = np.random.default_rng(1)
    latency = rng.lognormal(np.log(2000), 0.3, count * PER_MINUTE).astype(int)
    score = np.round(rng.beta(8, 2, count * PER_MINUTE), 5)
    labels = ("yes", "no", "up", "down")
    out = []
    for b in range(count):
        device, minute = f"dev-{b % 100:03d}", b // 100
        base = b * PER_MINUTE
        rows = tuple(
            InferenceRecord(
                "m4-0",
                "kws",
                "2",
                T0_MS + minute * 60_000 + i,
                int(latency[base + i]),
                float(score[base + i]),
                labels[i % 4],
                None,
            )
            for i in range(PER_MINUTE)
        )
        out.append(TelemetryBatch(device, minute, "rel-2", rows))
    return out


def _summaries(raw: list[TelemetryBatch]) -> list[SummaryBatch]:
    out = []
    for batch in raw:
        buffer = TelemetryBuffer(
            batch.device_id, 10_000, summary_interval_ms=60_000, raw_sample_rate=0.0
        )
        for row in batch.inference:
            buffer.add(row)
        buffer.close_intervals(2**53)
        built = buffer.batch("rel-2")
        assert isinstance(built, SummaryBatch)
        out.append(SummaryBatch(batch.device_id, batch.seq, "rel-2", built.summaries))
    return out


def _feed(path: Path, batches: list[TelemetryBatch] | list[SummaryBatch]) -> FeedSource:
    feed = TelemetryFeed.open(path, 4)
    events = []
    for b in batches:
        if isinstance(b, SummaryBatch):
            body, props = encode_summaries(b), summary_properties(b)
        else:
            body, props = encode_batch(b), message_properties(b)
        system = {
            "iothub-connection-device-id": b.device_id,
            "message-id": message_id(b.device_id, b.seq),
        }
        events.append(NewEvent(b.device_id, body, dict(props), system, T0_MS))
    for start in range(0, len(events), 1000):
        feed.append(events[start : start + 1000])
    return FeedSource(feed)


def _ingest(url: str, source: FeedSource) -> tuple[float, int]:
    upgrade(url)
    storage = SqlStorage(url)
    store = TelemetryStore(storage.engine)
    started = time.perf_counter()
    IngestWorker(source, store, batch=250).drain()
    elapsed = time.perf_counter() - started
    rollups = store.device_rollups(release_id="rel-2")
    inferences = merge_all(r for rows in rollups.values() for k, r in rows if k["model_id"])
    storage.engine.dispose()
    return elapsed, inferences.inferences


def test_summaries_against_raw_rows(url: str, tmp_path: Path) -> None:
    raw = _raw(DEVICE_MINUTES)
    summaries = _summaries(raw)
    inferences = DEVICE_MINUTES * PER_MINUTE
    raw_s, raw_n = _ingest(url, _feed(tmp_path / "raw.sqlite", raw))
    with SqlStorage(url).engine.begin() as conn:  # the same database again, emptied
        for table in (t.inference, t.health, t.events, t.seen, t.rollups, t.device_rollups):
            conn.execute(table.delete())
        conn.execute(t.partitions.delete())
    sum_s, sum_n = _ingest(url, _feed(tmp_path / "sum.sqlite", summaries))
    assert raw_n == sum_n == inferences
    records = sum(len(b.summaries) for b in summaries)
    name = url.split(":", 1)[0]
    print(
        f"\n[bench telemetry summaries {name}] {inferences} inferences: raw {inferences} rows "
        f"in {raw_s:.2f} s ({inferences / raw_s:,.0f} records/s = inferences/s); summaries "
        f"{records} records in {sum_s:.2f} s ({records / sum_s:,.0f} records/s, "
        f"{inferences / sum_s:,.0f} inferences/s); inferences/s ratio summaries/raw "
        f"{raw_s / sum_s:.1f}"
    )
