"""Telemetry ingestion and the stored-rollup gate, in records per second and seconds.

1. Ingest: device batches (encoded as devices send them) in the mock hub's feed file, read
   through `infra.telemetry_source.FeedSource` -> `IngestWorker`
   (decode, validate, dedupe, raw rows, rollups, seen marks, positions, one transaction per
   worker batch) -> committed rows, on SQLite and PostgreSQL. Baseline in the same run: a plain
   executemany (SQLite) / COPY (PostgreSQL) of the same, already built inference rows into the
   same table. The ratio says what validation, dedupe and rollups cost on top of the bare write.
   Aim: 100,000 records/s into PostgreSQL.
2. Gate: per-device rollups standing for 10 million inference records (1 million quick) from
   2 x 1000 devices (2 x 100 quick) that each send a batch a minute for an hour, the canary's
   jobs confirmed -> `TelemetryGate.evaluate` (jobs, read, parse, pair per device, merge,
   evaluate, store the verdict when it changed). Aim: under 1 s.

Quick by default; TINYFLEET_BENCH_FULL=1 for the full sizes. Figures are printed, not asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from device_agent.protocol.telemetry import (
    InferenceRecord,
    TelemetryBatch,
    encode_batch,
    message_id,
    message_properties,
)
from infra.hub import TelemetryFeed
from infra.hub._feed import NewEvent
from infra.telemetry_source import FeedSource
from service.domain.rollups import CohortRollup
from service.storage import DeviceGroup, GroupKind, RolloutStage, SqlStorage, upgrade
from service.telemetry import IngestWorker, TelemetryGate, TelemetryStore
from service.telemetry import _schema as tables
from service.telemetry._build import Accepted, build_rows
from service.telemetry._codec import encode
from service.telemetry._decode import Decoded
from tests.bench.conftest import FULL
from tests.contract.storage.conftest import pg_database, pg_url  # noqa: F401 - fixtures
from tests.contract.storage.factories import release, rollout
from tests.integration.telemetry._world import plan_jobs

RECORDS = 2_000_000 if FULL else 200_000
PER_BATCH = 200  # inference rows per device batch (~12 KB encoded)
WORKER_BATCH = 250  # device batches per commit: 50,000 records
GATE_RECORDS = 10_000_000 if FULL else 1_000_000
T0_MS = 1_795_000_000_000
STORED = ("rollup", "latency_hist", "score_hist")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        yield str(request.getfixturevalue("pg_url"))
    else:
        yield f"sqlite:///{tmp_path / 'bench.db'}"


def _batches(count: int) -> list[TelemetryBatch]:
    rng = np.random.default_rng(1)
    latency = rng.lognormal(np.log(2000), 0.3, count * PER_BATCH).astype(int)
    score = np.round(rng.beta(8, 2, count * PER_BATCH), 5)
    labels = ("yes", "no", "up", "down")
    out = []
    for b in range(count):
        device = f"dev-{b % 1000:04d}"
        base = b * PER_BATCH
        rows = tuple(
            InferenceRecord(
                "m4-0",
                "kws",
                "2",
                T0_MS + i,
                int(latency[base + i]),
                float(score[base + i]),
                labels[i % 4],
                None,
            )
            for i in range(PER_BATCH)
        )
        out.append(TelemetryBatch(device, b // 1000, "rel-2", rows))
    return out


def _feed(path: Path, batches: list[TelemetryBatch]) -> FeedSource:
    """The mock hub's feed file, filled as the hub fills it (system properties included)."""
    feed = TelemetryFeed.open(path, 4)
    events = [
        NewEvent(
            b.device_id,
            encode_batch(b),
            dict(message_properties(b)),
            {
                "iothub-connection-device-id": b.device_id,
                "message-id": message_id(b.device_id, b.seq),
            },
            T0_MS,
        )
        for b in batches
    ]
    for start in range(0, len(events), 1000):
        feed.append(events[start : start + 1000])
    return FeedSource(feed)


def test_ingest_rate_against_plain_bulk_insert(url: str, tmp_path: Path) -> None:
    upgrade(url)
    storage = SqlStorage(url)
    store = TelemetryStore(storage.engine)
    batches = _batches(RECORDS // PER_BATCH)
    source = _feed(tmp_path / "feed.sqlite", batches)
    worker = IngestWorker(source, store, batch=WORKER_BATCH)

    started = time.perf_counter()
    worker.drain()
    ingest_s = time.perf_counter() - started

    rows = build_rows(Accepted("0", 0, T0_MS, "", Decoded.from_batch(b)) for b in batches).inference
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM telemetry_inference")
    started = time.perf_counter()
    for start in range(0, len(rows), WORKER_BATCH * PER_BATCH):
        with storage.engine.begin() as conn:
            TelemetryStore._bulk(
                conn, tables.inference, rows[start : start + WORKER_BATCH * PER_BATCH]
            )
    plain_s = time.perf_counter() - started
    with storage.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT COUNT(*) FROM telemetry_inference").scalar_one()
    storage.close()

    assert stored == RECORDS
    name = storage.engine.dialect.name
    print(
        f"\n[bench telemetry ingest {name}] {RECORDS} records in {len(batches)} batches: "
        f"worker {RECORDS / ingest_s:,.0f} records/s ({ingest_s:.2f} s); "
        f"plain {'COPY' if name == 'postgresql' else 'executemany'} "
        f"{RECORDS / plain_s:,.0f} records/s ({plain_s:.2f} s); ratio {plain_s / ingest_s:.2f}"
    )


GATE_DEVICES = 1000 if FULL else 100  # per cohort; each sends one batch a minute for an hour


def _device_rollups(rng: np.random.Generator, records: int, median_us: float, device: str):
    per = records // 60
    for minute in range(60):
        yield (
            minute,
            CohortRollup.from_columns(
                [device],
                rng.lognormal(np.log(median_us), 0.3, per).astype(np.int64),
                np.round(rng.beta(8, 2, per), 5),
                label_names=("yes", "no", "up", "down"),
                label_codes=rng.choice(4, size=per).astype(np.int64),
            ),
        )


def test_gate_over_stored_rollups(url: str) -> None:
    upgrade(url)
    storage = SqlStorage(url)
    store = TelemetryStore(storage.engine)
    t0 = datetime.fromtimestamp(T0_MS / 1000, tz=UTC)
    ro = rollout(
        "ro-1",
        group_id="grp",
        release_id="rel-2",
        previous_release_id="rel-1",
        spec={"stages": [{"name": "canary", "percent": 50}], "gate": {"min_devices": 5}},
    )
    with storage.begin() as uow:
        uow.groups.put(DeviceGroup("grp", "grp", GroupKind.TAG, "site=x"))
        uow.releases.create(release("rel-1", 1))
        uow.releases.create(release("rel-2", 2))
        ro = uow.rollouts.create(ro)
        uow.rollouts.put_stage(RolloutStage("ro-1", 0, "running", 100, started_at=t0))
    canary = [f"c-{d}" for d in range(GATE_DEVICES)]
    control = [f"k-{d}" for d in range(GATE_DEVICES)]
    jobs = {d: (0, "confirmed") for d in canary} | {d: (0, "pending") for d in control}
    plan_jobs(storage, jobs, release_id="rel-2")
    rng = np.random.default_rng(3)
    per_device = GATE_RECORDS // 2 // GATE_DEVICES
    values = []
    for rel, median, devices in (("rel-2", 2100.0, canary), ("rel-1", 2000.0, control)):
        for d, device in enumerate(devices):
            for minute, rollup in _device_rollups(rng, per_device, median, device):
                values.append(
                    {
                        "device_id": device,
                        "release_id": rel,
                        "core": "m4-0",
                        "model_id": "kws",
                        "model_version": "2" if rel == "rel-2" else "1",
                        "bucket_ms": T0_MS // 10_000 * 10_000 + 10_000 + minute * 60_000,
                        "partition": str(d % 4),
                        **dict(zip(STORED, encode(rollup), strict=True)),
                    }
                )
    with storage.engine.begin() as conn:
        for start in range(0, len(values), 5000):
            conn.execute(tables.device_rollups.insert(), values[start : start + 5000])
    gate = TelemetryGate(store, storage)
    now = t0 + timedelta(hours=1)
    started = time.perf_counter()
    gate.evaluate(ro, 0, now)  # the first look decodes every stored rollup
    cold = time.perf_counter() - started
    best = float("inf")  # later looks reuse the decoded rows that did not change
    for _ in range(3):
        started = time.perf_counter()
        result = gate.evaluate(ro, 0, now)
        best = min(best, time.perf_counter() - started)
    storage.close()
    assert result is not None and result.cohorts["canary_inferences"] > 0
    print(
        f"\n[bench telemetry gate {storage.engine.dialect.name}] {GATE_RECORDS:,} records in "
        f"{len(values)} stored rollups: first look {cold * 1000:.1f} ms, later looks "
        f"{best * 1000:.1f} ms (ratio {best / cold:.2f}), verdict {result.verdict}"
    )
