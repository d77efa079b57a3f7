"""A worker SIGKILLed mid-batch (inside the transaction, or after COMMIT but before the source
checkpoint) loses and double-counts nothing once another worker takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_agent.protocol.telemetry import encode_batch, message_id, message_properties
from infra.hub import TelemetryFeed
from infra.hub._feed import NewEvent
from infra.telemetry_source import FeedSource
from service.telemetry import IngestWorker
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db

CHILD = Path(__file__).with_name("_crash_child.py")
BATCHES, ROWS = 120, 10


def make_feed(path: Path) -> None:
    feed = TelemetryFeed.open(path, 1)
    fleet = Fleet()
    events = []
    for n in range(BATCHES):
        batch = fleet.batch(f"dev-{n % 12}", n=ROWS)
        system = {
            "iothub-connection-device-id": batch.device_id,
            "message-id": message_id(batch.device_id, batch.seq),
        }
        props: dict[str, str | None] = dict(message_properties(batch))
        events.append(NewEvent(batch.device_id, encode_batch(batch), props, system, T0_MS + n))
    feed.append(events)
    feed.close()


@pytest.mark.parametrize("point", ["mid-transaction", "before-checkpoint"])
def test_sigkill_loses_and_double_counts_nothing(db: Db, tmp_path: Path, point: str) -> None:
    feed = tmp_path / "feed.sqlite"
    make_feed(feed)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(feed), db.url, point],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "STALLED"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    committed = db.count("telemetry_inference")
    assert committed == 25 * ROWS if point == "mid-transaction" else 50 * ROWS

    source = FeedSource.open(feed)
    worker = IngestWorker(source, db.store, clock=lambda: datetime.now(UTC))
    worker.drain()
    source.close()
    assert db.count("telemetry_inference") == BATCHES * ROWS
    assert db.count("telemetry_seen") == BATCHES
    cohort = db.store.cohort("", "rel-2", datetime(2020, 1, 1, tzinfo=UTC))
    assert cohort.inferences == BATCHES * ROWS
    stats = db.store.stats()
    assert (stats["ingested"], stats["duplicates"], stats["dead_letters"]) == (BATCHES, 0, 0)
