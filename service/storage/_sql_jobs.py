"""SQL repository for device jobs: keyed by (rollout, device, release), with the engine's
set-based queries (figures, offer candidates, joiners, bulk planning and offers)."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa

from service.storage._errors import (
    ConflictError,
    NotFoundError,
    StorageError,
)
from service.storage._port import LIVE_JOB_STATES, check_limit, job_cursor, parse_job_cursor
from service.storage._records import (
    DeviceJob,
    Page,
    group_filter,
)
from service.storage._schema import (
    device_groups,
    device_jobs,
    devices,
    releases,
    rollouts,
)
from service.storage._sql_base import chunks, translate_errors, unique, upsert_insert
from service.storage._sql_registry import (
    ANALYZE_AFTER,
    device_conditions,
    group_from_row,
    window_of_devices,
)

__all__ = ["SqlDeviceJobs"]


def _job(row: sa.Row[Any]) -> DeviceJob:
    return DeviceJob(
        rollout_id=row.rollout_id,
        device_id=row.device_id,
        release_id=row.release_id,
        stage=row.stage,
        state=row.state,
        reason=row.reason,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        offered_at=row.offered_at,
        updated_at=row.updated_at,
        order_key=row.order_key,
    )


def _job_values(job: DeviceJob) -> dict[str, Any]:
    return {
        "rollout_id": job.rollout_id,
        "device_id": job.device_id,
        "release_id": job.release_id,
        "stage": job.stage,
        "state": job.state,
        "reason": job.reason,
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at,
        "offered_at": job.offered_at,
        "updated_at": job.updated_at,
        "order_key": job.order_key,
    }


_J = device_jobs.c
_PLAN_CHUNK = 50_000
_PLAN_CACHE_KIB = 256 * 1024  # SQLite page cache while planning (see `plan`)
# The COPY column types, in `_copy`'s column order.
_COPY_TYPES = ["varchar", "varchar", "varchar", "int4", "varchar", "int4", "timestamptz", "int8"]


_JOB_KEY = ("rollout_id", "device_id", "release_id")


@functools.cache
def _update_statement(columns: tuple[str, ...], *, with_state: bool) -> sa.Update:
    """One job's UPDATE with bound parameters, built once per shape: the engine saves a job per
    report (1,000 per tick), and building and cache-keying a fresh statement each time cost
    more than the database did (tests/bench/engine)."""
    statement = sa.update(device_jobs).where(
        *(_J[name] == sa.bindparam(f"k_{name}") for name in _JOB_KEY)
    )
    if with_state:
        statement = statement.where(_J.state == sa.bindparam("k_state"))
    return statement.values({name: sa.bindparam(f"v_{name}") for name in columns})


def _forward(rollout_id: str) -> sa.ScalarSelect[Any]:
    """The rollout's own release, as a scalar subquery."""
    return sa.select(rollouts.c.release_id).where(rollouts.c.id == rollout_id).scalar_subquery()


def _release_is(rollout_id: str, release_id: str | None) -> sa.ColumnElement[bool]:
    return _J.release_id == (release_id if release_id is not None else _forward(rollout_id))


@translate_errors
class SqlDeviceJobs:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, jobs: Iterable[DeviceJob]) -> int:
        inserted = 0
        known_rollouts: set[str] = set()
        known_releases: set[str] = set()
        statement = (
            upsert_insert(self._conn, device_jobs)
            .on_conflict_do_nothing(index_elements=[_J.rollout_id, _J.device_id, _J.release_id])
            .returning(_J.device_id)
        )
        for batch in chunks(jobs):
            for rollout_id in {j.rollout_id for j in batch} - known_rollouts:
                query = sa.select(rollouts.c.id).where(rollouts.c.id == rollout_id)
                if self._conn.execute(query).first() is None:
                    raise NotFoundError("rollout", rollout_id)
                known_rollouts.add(rollout_id)
            for release_id in {j.release_id for j in batch} - known_releases:
                query = sa.select(releases.c.id).where(releases.c.id == release_id)
                if self._conn.execute(query).first() is None:
                    raise NotFoundError("release", release_id)
                known_releases.add(release_id)
            wanted = unique([j.device_id for j in batch])
            query = sa.select(devices.c.id).where(devices.c.id.in_(wanted))
            missing = set(wanted) - set(self._conn.execute(query).scalars())
            if missing:
                raise NotFoundError("device", min(missing))
            result = self._conn.execute(statement, [_job_values(j) for j in batch])
            inserted += len(result.all())
        return inserted

    def plan(
        self,
        rollout_id: str,
        release_id: str,
        rows: Iterable[tuple[str, int, int]],
        now: datetime,
    ) -> int:
        # No foreign key checks the rollout (0004): one look-up here instead of one per row.
        query = sa.select(rollouts.c.id).where(rollouts.c.id == rollout_id)
        if self._conn.execute(query).first() is None:
            raise NotFoundError("rollout", rollout_id)
        if self._conn.dialect.name == "postgresql":
            return self._copy(rollout_id, release_id, rows, now)
        dialect = self._conn.dialect
        stamp_of = _J.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
        stamp = stamp_of(now) if stamp_of is not None else now
        statement = (
            f"INSERT INTO {device_jobs.name} (rollout_id, device_id, release_id, stage, state, "
            "attempts, updated_at, order_key) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)"
        )
        inserted = 0
        # The candidates index (rollout, release, state, stage, order_key) takes its entries in
        # hash order, i.e. at random places: with SQLite's default 2 MB page cache most of them
        # evict and re-read a page. A larger cache for this call only (pages are allocated as
        # they are used, and released when the size is set back).
        cache = int(self._conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
        self._conn.exec_driver_sql(f"PRAGMA cache_size = -{_PLAN_CACHE_KIB}")
        try:
            for batch in chunks(rows, _PLAN_CHUNK):
                values = [(rollout_id, d, release_id, stage, stamp, key) for d, stage, key in batch]
                self._conn.exec_driver_sql(statement, values)
                inserted += len(values)
        finally:
            self._conn.exec_driver_sql(f"PRAGMA cache_size = {cache}")
        return inserted

    def _copy(
        self, rollout_id: str, release_id: str, rows: Iterable[tuple[str, int, int]], now: datetime
    ) -> int:
        raw: Any = self._conn.connection.driver_connection
        columns = "rollout_id, device_id, release_id, stage, state, attempts, updated_at, order_key"
        inserted = 0
        try:
            # Binary COPY: no text formatting or escaping per value (≈4x faster than text).
            with (
                raw.cursor() as cursor,
                cursor.copy(
                    f"COPY {device_jobs.name} ({columns}) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(_COPY_TYPES)
                write = copy.write_row
                for device_id, stage, key in rows:
                    write((rollout_id, device_id, release_id, stage, "pending", 0, now, key))
                    inserted += 1
            if inserted >= ANALYZE_AFTER:
                # Fresh statistics, or the planner walks a million rows it believes are one.
                self._conn.exec_driver_sql(f"ANALYZE {device_jobs.name}")
        except psycopg.errors.IntegrityError as exc:
            raise ConflictError(f"planning rollout {rollout_id}: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"planning rollout {rollout_id}: {exc}") from exc
        return inserted

    def offer(
        self,
        rollout_id: str,
        release_id: str,
        device_ids: Sequence[str],
        now: datetime,
        deadline: datetime | None = None,
    ) -> int:
        moved = 0
        for batch in chunks(unique(list(device_ids))):
            statement = (
                sa.update(device_jobs)
                .where(
                    _J.rollout_id == rollout_id,
                    _J.release_id == release_id,
                    _J.device_id.in_(batch),
                    _J.state == "pending",
                )
                .values(
                    state="offered",
                    attempts=_J.attempts + 1,
                    offered_at=now,
                    next_attempt_at=deadline,
                    updated_at=now,
                )
            )
            moved += self._conn.execute(statement).rowcount
        return moved

    def get(self, rollout_id: str, device_id: str, release_id: str | None = None) -> DeviceJob:
        query = sa.select(device_jobs).where(
            _J.rollout_id == rollout_id,
            _J.device_id == device_id,
            _release_is(rollout_id, release_id),
        )
        row = self._conn.execute(query).first()
        if row is None:
            raise NotFoundError("device job", (rollout_id, device_id, release_id))
        return _job(row)

    def update(self, job: DeviceJob, *, expected_state: str | None = None) -> None:
        values = _job_values(job)
        key = {name: values.pop(name) for name in _JOB_KEY}
        statement = _update_statement(tuple(values), with_state=expected_state is not None)
        params = {
            **{f"k_{n}": v for n, v in key.items()},
            **{f"v_{n}": v for n, v in values.items()},
        }
        if expected_state is not None:
            params["k_state"] = expected_state
        if self._conn.execute(statement, params).rowcount == 0:
            current = self.get(job.rollout_id, job.device_id, job.release_id)
            raise ConflictError(
                f"job {job.rollout_id}/{job.device_id}/{job.release_id} is {current.state}, "
                f"not {expected_state}"
            )

    def transition(
        self,
        rollout_id: str,
        device_ids: Sequence[str],
        *,
        from_states: Sequence[str],
        to_state: str,
        now: datetime,
        reason: str | None = None,
        next_attempt_at: datetime | None = None,
        offered: bool = False,
        count_attempt: bool = False,
        release_id: str | None = None,
    ) -> int:
        values: dict[str, Any] = {
            "state": to_state,
            "reason": reason,
            "next_attempt_at": next_attempt_at,
            "updated_at": now,
        }
        if offered:
            values["offered_at"] = now
        if count_attempt:
            values["attempts"] = _J.attempts + 1
        moved = 0
        for batch in chunks(unique(device_ids)):
            statement = (
                sa.update(device_jobs)
                .where(
                    _J.rollout_id == rollout_id,
                    _J.device_id.in_(batch),
                    _J.state.in_(list(from_states)),
                    _release_is(rollout_id, release_id),
                )
                .values(values)
            )
            moved += self._conn.execute(statement).rowcount
        return moved

    def transition_all(
        self,
        rollout_id: str,
        *,
        release_id: str,
        from_states: Sequence[str],
        to_state: str,
        now: datetime,
        reason: str | None = None,
    ) -> int:
        statement = (
            sa.update(device_jobs)
            .where(
                _J.rollout_id == rollout_id,
                _J.release_id == release_id,
                _J.state.in_(list(from_states)),
            )
            .values(state=to_state, reason=reason, next_attempt_at=None, updated_at=now)
        )
        return int(self._conn.execute(statement).rowcount)

    def list(
        self,
        rollout_id: str,
        *,
        states: Sequence[str] | None = None,
        after: str | None = None,
        limit: int = 100,
        release_id: str | None = None,
    ) -> Page[DeviceJob]:
        check_limit(limit)
        query = sa.select(device_jobs).where(_J.rollout_id == rollout_id)
        if states is not None:
            query = query.where(_J.state.in_(list(states)))
        if release_id is not None:
            query = query.where(_J.release_id == release_id)
        if after is not None:
            device, release = parse_job_cursor(after)
            later = _J.device_id > device
            if release is not None:
                later = sa.or_(later, sa.and_(_J.device_id == device, _J.release_id > release))
            query = query.where(later)
        query = query.order_by(_J.device_id, _J.release_id).limit(limit + 1)
        rows = self._conn.execute(query).all()
        items = [_job(row) for row in rows[:limit]]
        return Page(items, job_cursor(items[-1]) if len(rows) > limit else None)

    def count_by_state(
        self, rollout_id: str, *, stage: int | None = None, release_id: str | None = None
    ) -> dict[str, int]:
        query = sa.select(_J.state, sa.func.count()).where(_J.rollout_id == rollout_id)
        if stage is not None:
            query = query.where(_J.stage == stage)
        if release_id is not None:
            query = query.where(_J.release_id == release_id)
        rows = self._conn.execute(query.group_by(_J.state))
        return {state: int(count) for state, count in rows}

    def figures(self, rollout_id: str) -> dict[tuple[str, int], dict[str, int]]:
        query = (
            sa.select(_J.release_id, _J.stage, _J.state, sa.func.count())
            .where(_J.rollout_id == rollout_id)
            .group_by(_J.release_id, _J.stage, _J.state)
        )
        found: dict[tuple[str, int], dict[str, int]] = {}
        for release_id, stage, state, count in self._conn.execute(query):
            found.setdefault((release_id, stage), {})[state] = int(count)
        return found

    def candidates(
        self, rollout_id: str, release_id: str, *, max_stage: int, now: datetime, limit: int
    ) -> builtins.list[DeviceJob]:
        check_limit(limit)
        other = device_jobs.alias("other")
        busy = (
            sa.select(sa.literal(1))
            .select_from(other)
            .where(
                other.c.device_id == _J.device_id,
                other.c.rollout_id != rollout_id,
                other.c.state.in_(LIVE_JOB_STATES),
            )
        )
        query = (
            sa.select(device_jobs)
            .where(
                _J.rollout_id == rollout_id,
                _J.release_id == release_id,
                _J.state == "pending",
                _J.stage <= max_stage,
                sa.or_(_J.next_attempt_at.is_(None), _J.next_attempt_at <= now),
                ~busy.exists(),
            )
            .order_by(_J.stage, _J.order_key, _J.device_id)
            .limit(limit)
        )
        return [_job(row) for row in self._conn.execute(query)]

    def joiners(
        self, rollout_id: str, group_id: str, *, after: str | None = None, scan: int = 1000
    ) -> Page[str]:
        check_limit(scan)
        row = self._conn.execute(sa.select(device_groups).where(device_groups.c.id == group_id))
        found = row.first()
        if found is None:
            raise NotFoundError("group", group_id)
        # The next `scan` devices by primary key, then the selector on them (see
        # `SqlDeviceGroups.member_ids`), then the ones without a job.
        window = window_of_devices(after, scan)
        size, last = self._conn.execute(sa.select(sa.func.count(), sa.func.max(window.c.id))).one()
        planned = sa.select(sa.literal(1)).where(
            _J.rollout_id == rollout_id, _J.device_id == window.c.id
        )
        query = (
            sa.select(window.c.id)
            .where(
                *device_conditions(group_filter(group_from_row(found)), window.c),
                ~planned.exists(),
            )
            .order_by(window.c.id)
        )
        return Page(list(self._conn.execute(query).scalars()), last if size == scan else None)

    def due(self, now: datetime, *, limit: int = 100) -> builtins.list[DeviceJob]:
        check_limit(limit)
        query = (
            sa.select(device_jobs)
            .where(_J.next_attempt_at <= now)
            .order_by(_J.next_attempt_at, _J.rollout_id, _J.device_id)
            .limit(limit)
        )
        return [_job(row) for row in self._conn.execute(query)]

    def for_device(self, device_id: str) -> builtins.list[DeviceJob]:
        query = (
            sa.select(device_jobs)
            .where(_J.device_id == device_id)
            .order_by(_J.rollout_id, _J.release_id)
        )
        return [_job(row) for row in self._conn.execute(query)]
