"""Ingest rate with 1 worker process v 2 worker processes sharing one feed by lease, on
PostgreSQL.

The feed is the mock hub's feed file (4 partitions) holding device batches as devices encode
them; each worker is a real process (`python -m tests.bench.telemetry.test_ingest_leases`)
with its own `FeedSource` and `IngestWorker(leases=...)`. A worker first settles its fair share
(leases claimed, the others' released), says `ready` and waits for `go`, so the clock runs
over ingestion only, not over interpreter start-up or the first rebalance. The two runs use
the same feed and the same database (emptied between them); the ratio is records/s with two
workers over records/s with one.

What limits it: the machine (2 cores here) runs both workers and the PostgreSQL server, and a
worker's time is mostly Python (decoding, building rows and rollups), so the second worker
competes with the database for the cores; each commit also writes the same kind of rows under
one partition's lease rows, which do not contend. On more cores the ratio approaches 2 until
the database's write rate is the limit.

Quick by default; TINYFLEET_BENCH_FULL=1 for the full size. Figures are printed, not asserted.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from service.storage import SqlStorage, upgrade
from tests.bench.conftest import FULL
from tests.bench.telemetry.test_ingest_rate import PER_BATCH, _batches, _feed
from tests.contract.storage.conftest import pg_database, pg_url  # noqa: F401 - fixtures

RECORDS = 2_000_000 if FULL else 200_000
WORKER_BATCH = 100  # device batches per commit: 20,000 records
TTL = timedelta(seconds=10)
ROUNDS = 3 if FULL else 2  # alternating 1, 2, 1, 2 ...: the best of each counts
ROOT = Path(__file__).resolve().parents[3]
CHILD = (sys.executable, "-m", "tests.bench.telemetry.test_ingest_leases")
TABLES = (
    "telemetry_inference",
    "telemetry_health",
    "telemetry_events",
    "telemetry_seen",
    "telemetry_rollups",
    "telemetry_device_rollups",
    "telemetry_partitions",
    "telemetry_dead_letters",
    "telemetry_ingest_leases",
    "telemetry_ingest_workers",
)


def _run(workers: int, feed: Path, url: str) -> tuple[float, float]:
    """Seconds from `go` until every worker drained its share, and the CPU seconds the
    workers used in all (start-up and settling included)."""
    cpu = _children_cpu()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [*CHILD, str(feed), url, f"w-{n}", str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for n in range(workers)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().startswith("ready")
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.wait(timeout=600) == 0
        return time.perf_counter() - started, _children_cpu() - cpu
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_two_worker_processes_against_one(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    upgrade(pg_url)
    storage = SqlStorage(pg_url)
    batches = _batches(RECORDS // PER_BATCH)
    _feed(tmp_path / "feed.sqlite", batches).close()
    best: dict[int, tuple[float, float]] = {}
    for _ in range(ROUNDS):
        for workers in (1, 2):
            with storage.engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)}")
            wall, cpu = _run(workers, tmp_path / "feed.sqlite", pg_url)
            with storage.engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT COUNT(*) FROM telemetry_inference")).scalar()
            assert stored == RECORDS
            if workers not in best or wall < best[workers][0]:
                best[workers] = (wall, cpu)
    storage.close()
    (one_s, one_cpu), (two_s, two_cpu) = best[1], best[2]
    print(
        f"\n[bench telemetry ingest leases postgresql] {RECORDS:,} records in {len(batches)} "
        f"batches, 4 partitions, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}: "
        f"1 worker {RECORDS / one_s:,.0f} records/s ({one_s:.2f} s, {one_cpu:.1f} CPU s); "
        f"2 worker processes {RECORDS / two_s:,.0f} records/s ({two_s:.2f} s, "
        f"{two_cpu:.1f} CPU s); ratio {one_s / two_s:.2f}"
    )


def _worker(feed: str, url: str, worker_id: str, workers: int) -> None:
    """A child: settle a fair share among `workers`, say ready, wait for go, drain, release."""
    from infra.telemetry_source import FeedSource
    from service.telemetry import IngestWorker, LeaseConfig, TelemetryStore
    from service.telemetry._leases import fair_share, leases

    storage = SqlStorage(url)
    source = FeedSource.open(feed)
    worker = IngestWorker(
        source,
        TelemetryStore(storage.engine),
        leases=LeaseConfig(ttl=TTL, worker_id=worker_id),
        batch=WORKER_BATCH,
    )
    share = fair_share(len(source.partitions()), [f"w-{n}" for n in range(workers)], worker_id)
    assert worker.leases is not None
    while True:  # a worker's first balance may see only itself: wait for the split to settle
        worker.leases.balance()
        with storage.engine.connect() as conn:
            owners = conn.execute(sa.select(leases.c.owner)).scalars().all()
        if len(worker.partitions) == share and len(set(owners) - {None}) == workers:
            break
        time.sleep(0.05)
    print("ready", ",".join(worker.partitions), flush=True)
    sys.stdin.readline()
    while worker.run_once().received:
        pass
    worker.close()
    source.close()
    storage.close()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
