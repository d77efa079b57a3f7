"""A worker process for the SIGKILL test: ingests the mock hub's feed and stops dead (sleeps,
to be killed) at the named point of its second batch.

argv: FEED_PATH DB_URL POINT (mid-transaction | before-checkpoint)
"""

from __future__ import annotations

import sys
import time
from typing import Any

import sqlalchemy as sa

from infra.telemetry_source import FeedSource
from service.storage import SqlStorage
from service.telemetry import IngestWorker, TelemetryStore

BATCH = 25


class StallingStore(TelemetryStore):
    """Stalls inside the commit's transaction, after the raw rows and rollups were written."""

    calls = 0

    def _merge_rollups(self, conn: sa.Connection, table: sa.Table, rollups: Any) -> None:
        super()._merge_rollups(conn, table, rollups)
        StallingStore.calls += 1
        if StallingStore.calls == 4:  # the second commit's device rollups
            print("STALLED", flush=True)
            time.sleep(600)


class StallingSource(FeedSource):
    """Stalls before the source checkpoint of the second batch (after the commit)."""

    calls = 0

    def checkpoint(self, partition: str, sequence: int) -> None:
        StallingSource.calls += 1
        if StallingSource.calls == 2:
            print("STALLED", flush=True)
            time.sleep(600)
        super().checkpoint(partition, sequence)


def main() -> None:
    feed, url, point = sys.argv[1:4]
    storage = SqlStorage(url)
    if point == "mid-transaction":
        source: FeedSource = FeedSource.open(feed)
        store: TelemetryStore = StallingStore(storage.engine)
    else:
        source = StallingSource.open(feed)
        store = TelemetryStore(storage.engine)
    worker = IngestWorker(source, store, partitions=["0"], batch=BATCH)
    worker.drain()
    print("DRAINED", flush=True)


if __name__ == "__main__":
    main()
