"""Storage benchmark: bulk-upsert N devices, then page through them, on SQLite and PostgreSQL.

N is 20,000 by default and 1,000,000 with TINYFLEET_BENCH_FULL=1. Figures are printed (run with
`-s`), each next to a baseline measured in the same process: the same rows written with a bare
driver `executemany` INSERT into a plain table, and the same keyset pages read with a bare SQL
query. No timed assertions; the assertions check that every device was written and visited.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.storage import Device, DeviceFilter, SqlStorage, upgrade
from tests.bench.conftest import FULL
from tests.contract.storage.pg import postgres_server, scratch_database

N = 1_000_000 if FULL else 20_000
PAGE = 1000
FILTERED_PAGES = 200
T0 = datetime(2026, 11, 25, tzinfo=UTC)
BASELINE_DDL = (
    "CREATE TABLE bench_baseline (id VARCHAR(200) PRIMARY KEY, hardware_id VARCHAR(200), "
    "profile VARCHAR(200), agent_version VARCHAR(64), tags TEXT, reported TEXT, "
    "last_seen VARCHAR(40), created_at VARCHAR(40))"
)


def _devices(count: int, seen: datetime = T0) -> Iterator[Device]:
    for n in range(count):
        yield Device(
            id=f"dev-{n:07d}",
            hardware_id="mt3620",
            profile="kws" if n % 3 else "vibration",
            agent_version="1.0.0",
            tags={"site": f"site-{n % 50}", "ring": "canary" if n % 100 == 0 else "broad"},
            reported={"m4-0": {"model": "kws-v1", "state": "active"}},
            last_seen=seen + timedelta(seconds=n),
            created_at=T0,
        )


def _baseline_rows(count: int) -> Iterator[tuple[str, ...]]:
    for d in _devices(count):
        yield (
            d.id,
            d.hardware_id,
            d.profile,
            d.agent_version,
            json.dumps(d.tags),
            json.dumps(d.reported),
            str(d.last_seen),
            str(d.created_at),
        )


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


@pytest.fixture(params=["sqlite", "postgresql"])
def bench_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bench.db'}"
        return
    with postgres_server() as admin:
        assert admin is not None, "PostgreSQL is needed (Debian package postgresql)"
        with scratch_database(admin) as url:
            yield url


@pytest.mark.timeout(7200 if FULL else 300)
def test_bulk_upsert_and_keyset_paging(bench_url: str) -> None:
    upgrade(bench_url)
    storage = SqlStorage(bench_url)
    backend = storage.engine.dialect.name
    try:
        # Baseline writes: the same rows, bare INSERT through the driver, 10,000 per commit.
        with storage.engine.begin() as conn:
            conn.exec_driver_sql(BASELINE_DDL)
        insert = "INSERT INTO bench_baseline VALUES " + (
            "(?, ?, ?, ?, ?, ?, ?, ?)"
            if backend == "sqlite"
            else "(%s, %s, %s, %s, %s, %s, %s, %s)"
        )
        started = time.perf_counter()
        rows = _baseline_rows(N)
        while batch := [row for _, row in zip(range(10_000), rows, strict=False)]:
            with storage.engine.begin() as conn:
                conn.exec_driver_sql(insert, batch)
        baseline_s = time.perf_counter() - started

        # Ours: upsert through the repository, one unit of work per 10,000 devices.
        started = time.perf_counter()
        devices = _devices(N)
        written = 0
        while batch_devices := [d for _, d in zip(range(10_000), devices, strict=False)]:
            with storage.begin() as uow:
                written += uow.devices.upsert(batch_devices)
        upsert_s = time.perf_counter() - started
        assert written == N

        # Re-upsert on a sample: unchanged (a sync of a quiet fleet), then with every device
        # seen later (the update path, as when devices report in).
        sample = min(N, 20_000)
        started = time.perf_counter()
        with storage.begin() as uow:
            uow.devices.upsert(_devices(sample))
        unchanged_rate = sample / (time.perf_counter() - started)
        started = time.perf_counter()
        with storage.begin() as uow:
            uow.devices.upsert(_devices(sample, seen=T0 + timedelta(days=1)))
        update_rate = sample / (time.perf_counter() - started)

        # Page through every device by id.
        pages: list[float] = []
        visited, after = 0, None
        while True:
            started = time.perf_counter()
            with storage.begin(readonly=True) as uow:
                page = uow.devices.list(DeviceFilter(), after=after, limit=PAGE)
            pages.append(time.perf_counter() - started)
            visited += len(page.items)
            if page.next_after is None:
                break
            after = page.next_after
        assert visited == N

        baseline_pages: list[float] = []
        select = "SELECT * FROM bench_baseline WHERE id > {} ORDER BY id LIMIT {}".format(
            "?" if backend == "sqlite" else "%s", PAGE
        )
        last = ""
        with storage.engine.connect() as conn:
            while True:
                started = time.perf_counter()
                got = conn.exec_driver_sql(select, (last,)).all()
                baseline_pages.append(time.perf_counter() - started)
                if len(got) < PAGE:
                    break
                last = got[-1][0]

        # Filtered pages (tag + last_seen range), as the API's device list would run them.
        filtered: list[float] = []
        where = DeviceFilter(
            tags={"site": "site-7"}, last_seen_after=T0 + timedelta(seconds=N // 4)
        )
        after = None
        for _ in range(FILTERED_PAGES):
            started = time.perf_counter()
            with storage.begin(readonly=True) as uow:
                page = uow.devices.list(where, after=after, limit=100)
            filtered.append(time.perf_counter() - started)
            after = page.next_after
            if after is None:
                break
    finally:
        storage.close()

    p50, p99 = _percentiles(pages)
    b50, b99 = _percentiles(baseline_pages)
    f50, f99 = _percentiles(filtered)
    print(
        f"\n[storage bench] {backend}, N={N:,}\n"
        f"  bulk upsert      {N / upsert_s:>10,.0f} devices/s   {upsert_s:7.2f} s   "
        f"(bare INSERT baseline {N / baseline_s:,.0f}/s, {baseline_s:.2f} s; "
        f"time ratio {upsert_s / baseline_s:.2f})\n"
        f"  unchanged upsert {unchanged_rate:>10,.0f} devices/s   (on {sample:,} stored devices)\n"
        f"  update upsert    {update_rate:>10,.0f} devices/s   (on {sample:,} stored devices)\n"
        f"  page of {PAGE}    p50 {p50:7.2f} ms  p99 {p99:7.2f} ms   "
        f"(bare SELECT baseline p50 {b50:.2f} ms, p99 {b99:.2f} ms; "
        f"p50 ratio {p50 / b50:.1f})\n"
        f"  filtered page    p50 {f50:7.2f} ms  p99 {f99:7.2f} ms   "
        f"(100 devices, tag + last_seen, {len(filtered)} pages)"
    )
