"""Summaries ingested through the real store (SQLite and PostgreSQL) give each device exactly the
rollup its raw rows give, a redelivered summary counts once, and a gate judged on summaries gives
the verdict it gives on raw rows."""

from __future__ import annotations

from typing import Any

from device_agent.protocol.summary import SummaryBatch, encode_summaries
from device_agent.protocol.telemetry import message_id
from device_agent.telemetry_buffer import TelemetryBuffer
from service.domain.device_gates import evaluate_devices
from service.domain.gates import GatePolicy
from service.domain.rollups import merge_all
from service.telemetry import IngestWorker
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db

BUCKET0_MS = T0_MS // 60_000 * 60_000
POLICY = GatePolicy(stage="canary", alpha=0.01, min_inferences=100, min_devices=3)


def _send_both(fleet: Fleet, device: str, release: str, latency: float) -> None:
    """Three minutes of rows: raw under `release`, and the same rows as summaries under
    `release`-sum, the summary message delivered twice."""
    buffer = TelemetryBuffer(device, 10_000, summary_interval_ms=60_000, raw_sample_rate=0.0)
    for minute in range(3):
        fleet.clock_ms = BUCKET0_MS + minute * 60_000 + 1_000
        batch = fleet.batch(device, release, n=60, latency=latency)
        fleet.send(batch)
        for row in batch.inference:
            buffer.add(row)
        buffer.close_intervals(fleet.clock_ms + 60_000)
        summaries = buffer.batch(f"{release}-sum")
        assert isinstance(summaries, SummaryBatch)
        seq = 1000 + fleet.seq[device]
        wire = SummaryBatch(device, seq, f"{release}-sum", summaries.summaries)
        for _ in range(2):  # redelivered
            fleet.raw(device, encode_summaries(wire), mid=message_id(device, seq))
        buffer.acknowledge(summaries)


def _per_device(db: Db, release: str) -> dict[str, Any]:
    found = db.store.device_rollups(release_id=release)
    return {
        device: merge_all(r for k, r in rows if k["model_id"]) for device, rows in found.items()
    }


def test_summaries_give_the_raw_rows_rollups_and_verdict(db: Db) -> None:
    fleet = Fleet()
    # Six devices a side: at four, the anytime-valid t-mixture's p sits beside alpha after Holm
    # over seven metrics, so a doubled latency could read WAIT on some rows and FAIL on others.
    for d in range(6):
        _send_both(fleet, f"can-{d}", "rel-2", latency=4000.0)
        _send_both(fleet, f"ctl-{d}", "rel-1", latency=2000.0)
    IngestWorker(fleet.source, db.store, groups_of=lambda _d: ("grp-1",)).drain()
    for release in ("rel-1", "rel-2"):
        raw, summarised = _per_device(db, release), _per_device(db, f"{release}-sum")
        assert sorted(raw) == sorted(summarised)
        for device, rollup in raw.items():
            assert summarised[device] == rollup
            assert rollup.inferences == 180
    from_raw = evaluate_devices(POLICY, _per_device(db, "rel-2"), _per_device(db, "rel-1"))
    from_summaries = evaluate_devices(
        POLICY,
        _per_device(db, "rel-2-sum"),
        _per_device(db, "rel-1-sum"),
    )
    assert from_summaries == from_raw and from_raw.outcome.name == "FAIL"
