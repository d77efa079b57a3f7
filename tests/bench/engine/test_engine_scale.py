"""Engine scale benchmark (issue 5): a rollout over every device of a large fleet.

N devices (20,000 by default, 1,000,000 with TINYFLEET_BENCH_FULL=1) in SQLite and PostgreSQL:
- plan: `Engine.create_rollout` over all of them (read the group, plan stages, one PENDING job
  per device), against a baseline of the same work in bare SQL (SELECT every id, executemany
  INSERT of N job rows into a plain table);
- tick: `Engine.tick` with 1,000 live jobs and the rest pending (memory hub gateway holding
  those devices' twins): the tick that offers the first 1,000 (candidate selection among N
  pending), the tick that applies 1,000 progress reports, and an idle tick; against a baseline
  SELECT of 1,000 job rows plus an executemany UPDATE of them;
- dispatch: the outbox those 1,000 offers wrote (a director write and a twin patch each)
  through `Dispatcher.run_once` with the memory hub gateway and director, as devices per
  minute, against the same director and twin calls made bare;
- API: p50/p99 of `GET /api/v1/devices` (a page of 100 from a random position) and of the same
  filtered by tag and profile, through `service.api.create_app` behind httpx's ASGI transport,
  and of the storage query each runs, against a bare keyset SELECT of 100 rows.

Figures are printed (run with `-s`) with their ratios to the baselines measured in the same
process; the aims (plan < 5 s, tick < 1 s, p99 < 100 ms) are printed next to them. There are no
timed assertions: the assertions check that the work was done (N jobs, 1,000 offers, reports
applied, full pages).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_agent.protocol import COMPONENT, WorkflowAction
from service.api import API_PREFIX, ApiContext, create_app
from service.domain.rollout_events import Start
from service.domain.spec import RatePolicy, RolloutSpec, Stage
from service.engine import Dispatcher, Engine, EngineConfig, MemoryDirector, MemoryNotifier
from service.hubgateway import MemoryHubGateway, ServiceSpec
from service.storage import (
    MAX_PAGE,
    Device,
    DeviceFilter,
    DeviceGroup,
    GroupKind,
    Release,
    Role,
    SqlStorage,
    upgrade,
)
from tests.bench.conftest import FULL
from tests.contract.storage.pg import postgres_server, scratch_database

N = 1_000_000 if FULL else 20_000
LIVE = 1000
BATCH = 10_000
SAMPLES = 300
T0 = datetime.now(UTC)  # one clock: the ticks below run on the wall clock too
CONFIG = EngineConfig(
    image_url="https://repo.test/image/metadata/",
    director_url="https://repo.test/director/devices/{device_id}/metadata/",
    targets_url="https://repo.test/image/targets/",
    lease_ttl=timedelta(minutes=10),  # a slow tick must not lose the lease in the middle
    dispatch_batch=1000,
)
SPEC = RolloutSpec(
    rollout_id="ro-bench",
    release_id="rel-1",
    group_id="grp-all",
    stages=(
        Stage("first", timedelta(hours=1), count=LIVE),
        Stage("rest", timedelta(hours=1), percent=100),
    ),
    rate=RatePolicy(base_per_minute=100_000, max_per_minute=100_000),
)
DEVICE_DDL = (
    "CREATE TABLE bench_devices (id VARCHAR(200) PRIMARY KEY, hardware_id VARCHAR(200), "
    "profile VARCHAR(200), tags TEXT, created_at VARCHAR(40))"
)
JOB_DDL = (
    "CREATE TABLE bench_jobs (rollout_id VARCHAR(64), device_id VARCHAR(200), stage INTEGER, "
    "state VARCHAR(20), updated_at VARCHAR(40), PRIMARY KEY (rollout_id, device_id))"
)
JOB_INDEX = "CREATE INDEX bench_jobs_state ON bench_jobs (rollout_id, state, device_id)"
JOB_SQL_DDL = JOB_DDL.replace("bench_jobs", "bench_jobs_sql")


def _device_id(n: int) -> str:
    return f"dev-{n:07d}"


def _devices(count: int) -> Iterator[Device]:
    for n in range(count):
        yield Device(
            id=_device_id(n),
            hardware_id="mt3620",
            profile="kws" if n % 3 else "vibration",
            agent_version="1.0.0",
            tags={"fleet": "bench", "site": f"site-{n % 50}"},
            last_seen=T0 + timedelta(seconds=n),
            created_at=T0,
        )


def _batches(items: Iterator[Any], size: int = BATCH) -> Iterator[list[Any]]:
    while batch := [item for _, item in zip(range(size), items, strict=False)]:
        yield batch


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def _dispatch_all(dispatcher: Dispatcher, now: datetime) -> int:
    sent = 0
    while done := dispatcher.run_once(now):
        sent += done
    return sent


def _bare_dispatch(hub: MemoryHubGateway, device_ids: list[str]) -> float:
    director = MemoryDirector()
    started = time.perf_counter()
    for device_id in device_ids:
        director.assign(device_id, "mt3620", "rel-1", T0)
        spec = ServiceSpec(
            action=WorkflowAction.DEPLOY,
            workflow_id="bare.1",
            image_url=CONFIG.image_url,
            director_url=CONFIG.director_url_for(device_id),
            targets_url=CONFIG.targets_url,
        )
        hub.set_desired_service(device_id, spec)
    return time.perf_counter() - started


def _agent_report(workflow_id: str, step: str) -> dict[str, Any]:
    return {
        COMPONENT: {
            "__t": "c",
            "agent": {
                "state": "deploying",
                "workflow": {"id": workflow_id},
                "installedReleaseId": "rel-0",
                "lastResult": {"step": step, "reason": ""},
                "cores": {"m4-0": {"state": "running"}},
            },
        }
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def bench_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bench.db'}"
        return
    with postgres_server() as admin:
        if admin is None:
            pytest.skip("no PostgreSQL server reachable and no initdb to start one")
        with scratch_database(admin) as url:
            yield url


def _analyze(storage: SqlStorage) -> None:
    """Refresh the planner's statistics (PostgreSQL picks a sequential scan for a filtered
    page of a freshly bulk-loaded table until they exist)."""
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


class _Api:
    """The HTTP API in process: `create_app` behind httpx's ASGI transport, one event loop."""

    def __init__(self, app: Any, secret: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {secret}"},
        )

    def get(self, params: dict[str, Any], expect: int | None) -> float:
        started = time.perf_counter()
        response = self._loop.run_until_complete(
            self._client.get(f"{API_PREFIX}/devices", params=params)
        )
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        if expect is not None:
            assert len(response.json()["items"]) == expect
        return elapsed

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


def _query(storage: SqlStorage, where: DeviceFilter, after: str) -> float:
    started = time.perf_counter()
    with storage.begin(readonly=True) as uow:
        uow.devices.list(where, after=after, limit=100)
    return time.perf_counter() - started


class Baseline:
    """The same work in bare SQL through the driver, on plain tables of the same database."""

    def __init__(self, storage: SqlStorage) -> None:
        self.engine = storage.engine
        self.mark = "?" if self.engine.dialect.name == "sqlite" else "%s"
        with self.engine.begin() as conn:
            for ddl in (DEVICE_DDL, JOB_DDL, JOB_INDEX, JOB_SQL_DDL):
                conn.exec_driver_sql(ddl)

    def insert_devices(self) -> float:
        sql = f"INSERT INTO bench_devices VALUES ({', '.join([self.mark] * 5)})"
        rows = (
            (d.id, d.hardware_id, d.profile, repr(dict(d.tags)), str(d.created_at))
            for d in _devices(N)
        )
        started = time.perf_counter()
        for batch in _batches(rows):
            with self.engine.begin() as conn:
                conn.exec_driver_sql(sql, batch)
        return time.perf_counter() - started

    def plan(self) -> float:
        """Read every device id, write one job row per device, in one transaction."""
        insert = f"INSERT INTO bench_jobs VALUES ({', '.join([self.mark] * 5)})"
        started = time.perf_counter()
        with self.engine.begin() as conn:
            ids = [row[0] for row in conn.exec_driver_sql("SELECT id FROM bench_devices")]
            now = str(datetime.now(UTC))
            rows = ((SPEC.rollout_id, d, 0 if n < LIVE else 1, "pending", now) for n, d in
                    enumerate(ids))  # fmt: skip
            for batch in _batches(rows):
                conn.exec_driver_sql(insert, batch)
        assert len(ids) == N
        return time.perf_counter() - started

    def plan_in_sql(self) -> float:
        """The lower bound: one INSERT ... SELECT, no row leaves the database."""
        m = self.mark
        sql = f"INSERT INTO bench_jobs_sql SELECT {m}, id, 1, 'pending', {m} FROM bench_devices"
        started = time.perf_counter()
        with self.engine.begin() as conn:
            inserted = conn.exec_driver_sql(sql, (SPEC.rollout_id, str(datetime.now(UTC))))
        assert inserted.rowcount == N
        return time.perf_counter() - started

    def tick(self) -> float:
        """Read 1,000 live job rows and update each, in one transaction."""
        m = self.mark
        select = (
            f"SELECT device_id, state FROM bench_jobs WHERE rollout_id = {m} AND stage = 0 "
            f"AND state IN ({m}, {m}) ORDER BY device_id"
        )
        update = f"UPDATE bench_jobs SET state = {m}, updated_at = {m} WHERE rollout_id = {m} " \
                 f"AND device_id = {m}"  # fmt: skip
        started = time.perf_counter()
        with self.engine.begin() as conn:
            rows = conn.exec_driver_sql(select, (SPEC.rollout_id, "pending", "offered")).all()
            now = str(datetime.now(UTC))
            conn.exec_driver_sql(
                update, [("offered", now, SPEC.rollout_id, device) for device, _ in rows]
            )
        assert len(rows) == LIVE
        return time.perf_counter() - started

    def page(self, after: str) -> float:
        sql = f"SELECT * FROM bench_devices WHERE id > {self.mark} ORDER BY id LIMIT 100"
        with self.engine.connect() as conn:
            started = time.perf_counter()
            rows = conn.exec_driver_sql(sql, (after,)).all()
            elapsed = time.perf_counter() - started
        assert rows
        return elapsed


@pytest.mark.timeout(7200 if FULL else 600)
def test_rollout_over_the_whole_fleet(bench_url: str) -> None:
    upgrade(bench_url)
    storage = SqlStorage(bench_url)
    backend = storage.engine.dialect.name
    figures: list[str] = []
    try:
        baseline = Baseline(storage)
        base_insert = baseline.insert_devices()

        # The fleet, through the repository (informational: the storage bench covers it).
        started = time.perf_counter()
        for batch in _batches(_devices(N)):
            with storage.begin() as uow:
                uow.devices.upsert(batch)
        upsert = time.perf_counter() - started
        _analyze(storage)  # a fleet is loaded long before a rollout: autovacuum has run by then
        with storage.begin() as uow:
            uow.groups.put(DeviceGroup("grp-all", "everyone", GroupKind.TAG, "fleet=bench"))
            uow.releases.create(Release("rel-1", 1, ("mt3620",), {}, T0, "alice"))
        figures.append(
            f"  devices.upsert   {upsert:8.2f} s   (bare executemany {base_insert:.2f} s; "
            f"ratio {upsert / base_insert:.1f})"
        )

        # Plan: create the rollout over every device.
        hub = MemoryHubGateway()
        engine = Engine(storage, hub, CONFIG)
        jobs, plan = _timed(lambda: engine.create_rollout(SPEC, datetime.now(UTC)))
        assert jobs == N
        base_plan = baseline.plan()
        sql_plan = baseline.plan_in_sql()
        figures.append(
            f"  create_rollout   {plan:8.2f} s   (bare SELECT + executemany {base_plan:.2f} s; "
            f"ratio {plan / base_plan:.1f}; one INSERT ... SELECT {sql_plan:.2f} s)   aim < 5 s"
        )

        # Ticks: offer the first stage's 1,000, then apply 1,000 reports, then nothing to do.
        engine.command(SPEC.rollout_id, Start("alice"), datetime.now(UTC))
        _, tick_offer = _timed(lambda: engine.tick(datetime.now(UTC)))
        with storage.begin(readonly=True) as uow:
            offered = uow.jobs.list(SPEC.rollout_id, states=["offered"], limit=MAX_PAGE).items
        assert len(offered) == LIVE
        for job in offered:
            hub.register_device(job.device_id)
        # Dispatch: the outbox of those offers (a director write and a twin patch per device)
        # through the memory hub gateway and director, against the same hub and director calls
        # made bare (no outbox, no storage).
        dispatcher = Dispatcher(storage, hub, MemoryDirector(), MemoryNotifier(), CONFIG)
        sent, dispatch = _timed(lambda: _dispatch_all(dispatcher, datetime.now(UTC)))
        assert sent >= 2 * LIVE, sent  # and the Start notice
        base_dispatch = _bare_dispatch(hub, [job.device_id for job in offered])
        figures.append(
            f"  dispatch {LIVE:,} offers {dispatch:6.3f} s = {LIVE / dispatch * 60:,.0f} "
            "devices/min"
            f"   (bare director + twin calls {base_dispatch:.3f} s; ratio "
            f"{dispatch / base_dispatch:.1f})   aim >= 100,000/min"
        )
        for job in offered:
            workflow = f"{SPEC.rollout_id}.{SPEC.release_id}.{job.attempts}"
            hub.report(job.device_id, _agent_report(workflow, "verify"))
        _, tick_reports = _timed(lambda: engine.tick(datetime.now(UTC)))
        with storage.begin(readonly=True) as uow:
            counts = uow.jobs.count_by_state(SPEC.rollout_id)
        assert counts.get("verifying") == LIVE, counts
        _, tick_idle = _timed(lambda: engine.tick(datetime.now(UTC)))
        _analyze(storage)  # the jobs table was just filled; a later tick sees fresh statistics
        _, tick_analyzed = _timed(lambda: engine.tick(datetime.now(UTC)))
        base_tick = baseline.tick()
        for name, took in (
            ("offers 1,000", tick_offer),
            ("1,000 reports", tick_reports),
            ("idle, 1,000 live", tick_idle),
            ("idle, ANALYZEd", tick_analyzed),
        ):
            figures.append(
                f"  tick: {name:<17} {took:6.3f} s   (bare SELECT + UPDATE of 1,000 jobs "
                f"{base_tick:.3f} s; ratio {took / base_tick:.0f})   aim < 1 s"
            )

        # API: the device list and filter endpoints through the ASGI app (httpx), and the
        # storage query each runs, from random positions; baseline: a bare keyset SELECT.
        rng = random.Random(7)
        starts = [_device_id(rng.randrange(N - 200)) for _ in range(SAMPLES)]
        with storage.begin() as uow:
            secret = uow.tokens.create("bench", Role.VIEWER, datetime.now(UTC)).secret
        api = _Api(create_app(ApiContext(storage, engine=engine, hub=hub)), secret)
        where = DeviceFilter(tags={"site": "site-7"}, profile="kws")
        samples: dict[str, list[float]] = {k: [] for k in ("list", "filter", "q", "qf", "base")}
        try:
            for after in starts:
                samples["list"].append(api.get({"after": after, "limit": 100}, 100))
                filtered = {"after": after, "limit": 100, "tag": "site=site-7", "profile": "kws"}
                samples["filter"].append(api.get(filtered, None))
                samples["q"].append(_query(storage, DeviceFilter(), after))
                samples["qf"].append(_query(storage, where, after))
                samples["base"].append(baseline.page(after))
        finally:
            api.close()
        _, b99 = _percentiles(samples["base"])
        for key, name in (
            ("list", "GET /devices"),
            ("filter", "GET /devices?tag&profile"),
            ("q", "  (its storage query)"),
            ("qf", "  (its storage query)"),
        ):
            p50, p99 = _percentiles(samples[key])
            figures.append(
                f"  {name:<25} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   (bare keyset SELECT of 100 "
                f"rows p99 {b99:.2f} ms; p99 ratio {p99 / b99:.1f})   aim p99 < 100 ms"
            )
    finally:
        storage.close()
    print(f"\n[engine scale bench] {backend}, N={N:,}, live jobs {LIVE:,}\n" + "\n".join(figures))
