"""SQL repositories for the registry: devices, device groups and releases."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from service.storage._errors import AlreadyExistsError, ConflictError, NotFoundError
from service.storage._port import check_limit
from service.storage._records import (
    REPORTED_FIELDS,
    Device,
    DeviceFilter,
    DeviceGroup,
    GroupKind,
    Page,
    Release,
    group_filter,
)
from service.storage._schema import device_groups, devices, releases, rollouts
from service.storage._sql_base import (
    PG_COPY_TYPES,
    chunks,
    copy_rows,
    executemany,
    translate_errors,
    unique,
    upsert_insert,
)

__all__ = ["SqlDeviceGroups", "SqlDevices", "SqlReleases"]

_DEVICE_COLUMNS = tuple(c.name for c in devices.columns)
_DEVICE_UPDATED = ("hardware_id", "profile", "agent_version", "tags", "reported", "last_seen")
UPSERT_CHUNK = 10_000  # devices per statement: memory stays bounded whatever the input's size


def _upsert_sql(source: str) -> str:
    """`INSERT ... ON CONFLICT DO UPDATE` of devices from `source` (VALUES or a SELECT).

    The update keeps `created_at` and skips a row whose content is unchanged (IS DISTINCT FROM,
    NULL-safe): a sync of an unchanged fleet writes no row (no new row version, WAL or dead
    tuple), with the same stored result as rewriting it.
    """
    stored = ", ".join(f"{devices.name}.{name}" for name in _DEVICE_UPDATED)
    incoming = ", ".join(f"excluded.{name}" for name in _DEVICE_UPDATED)
    return (
        f"INSERT INTO {devices.name} ({', '.join(_DEVICE_COLUMNS)}) {source} "
        f"ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{name} = excluded.{name}" for name in _DEVICE_UPDATED)
        + f" WHERE ({stored}) IS DISTINCT FROM ({incoming})"
    )


# PostgreSQL: each chunk is COPied into a session's temporary table (emptied at commit), then
# merged by one statement. ids are unique in it (see `_last_of_each`): ON CONFLICT DO UPDATE
# cannot touch a row twice in one statement.
_PG_INCOMING = "tinyfleet_devices_in"
_PG_TYPES = [PG_COPY_TYPES[type(c.type)] for c in devices.columns]
_PG_CREATE_INCOMING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_INCOMING} ("
    + ", ".join(f"{n} {t}" for n, t in zip(_DEVICE_COLUMNS, _PG_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS"
)
_PG_MERGE = _upsert_sql(f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM {_PG_INCOMING}")
# SQLite: one executemany applies the rows in order, so repeated ids need no merging.
_SQLITE_UPSERT = _upsert_sql(f"VALUES ({', '.join('?' * len(_DEVICE_COLUMNS))})")


def _last_of_each(batch: Sequence[Device]) -> Iterable[Device]:
    """One device per id, as upserting them one by one would leave it: the last one's fields
    with the first one's created_at (an existing row's is kept by the upsert itself)."""
    found: dict[str, Device] = {}
    for device in batch:
        first = found.get(device.id)
        found[device.id] = device if first is None else replace(device, created_at=first.created_at)
    return found.values()


def _pg_row(d: Device) -> tuple[Any, ...]:
    return (
        d.id,
        d.hardware_id,
        d.profile,
        d.agent_version,
        dict(d.tags),
        dict(d.reported),
        d.last_seen,
        d.created_at,
    )


class _SqliteTimes:
    """Aware datetimes as SQLAlchemy's SQLite DATETIME stores them (naive UTC text with
    microseconds, see `UtcDateTime`), remembering the last one: a sync stamps every new device
    with the same `created_at`."""

    def __init__(self) -> None:
        self._last: tuple[datetime | None, str | None] = (None, None)

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        last, text = self._last
        if value is not last:
            utc = value.astimezone(UTC).replace(tzinfo=None)
            text = utc.isoformat(" ", "microseconds")
            self._last = (value, text)
        return text


def _sqlite_rows(batch: Sequence[Device]) -> list[tuple[Any, ...]]:
    created, seen, dumps = _SqliteTimes(), _SqliteTimes(), json.dumps
    return [
        (
            d.id,
            d.hardware_id,
            d.profile,
            d.agent_version,
            dumps(dict(d.tags)),
            dumps(dict(d.reported)),
            seen(d.last_seen),
            created(d.created_at),
        )
        for d in batch
    ]


def _device(row: sa.Row[Any]) -> Device:
    return Device(
        id=row.id,
        hardware_id=row.hardware_id,
        profile=row.profile,
        agent_version=row.agent_version,
        tags=row.tags,
        reported=row.reported,
        last_seen=row.last_seen,
        created_at=row.created_at,
    )


ANALYZE_AFTER = 10_000  # rows written in one call before PostgreSQL's statistics are renewed


def window_of_devices(after: str | None, size: int) -> sa.Subquery:
    """The next `size` devices after `after` by id, as a subquery (LIMIT: never flattened)."""
    window = sa.select(*devices.c)
    if after is not None:
        window = window.where(devices.c.id > after)
    return window.order_by(devices.c.id).limit(size).subquery("window")


class _HasKey(sa.sql.functions.FunctionElement[bool]):
    """A JSON object column holds a key: `_HasKey(column, key, json_path)`, compiled to `?` on
    PostgreSQL and to `json_type` on SQLite (both the key and its path are clauses, so that the
    statement cache tells keys apart)."""

    inherit_cache = True
    type = sa.Boolean()
    name = "has_key"


@compiles(_HasKey)
def _has_key_sqlite(element: _HasKey, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, path = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(json_type({column}, {path}) IS NOT NULL)"


@compiles(_HasKey, "postgresql")
def _has_key_postgresql(element: _HasKey, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({column} ? {key})"


def _reported_absent_or(column: Any, key: str, value: str) -> sa.ColumnElement[bool]:
    """`reported[key]` is absent or equals `value`: a device-reported fact narrows a filter on
    the operator's column, never widens it.

    The key test adds no result (an absent key also reads as NULL), but it gives PostgreSQL's
    planner a selectivity near 1 for the usual case (most devices do not report the key): with
    only `->> IS NULL OR ->> =`, which it estimates at 1% for want of statistics on the
    expression, a filtered keyset page of a million devices was planned as a parallel scan and
    its p99 went from 36 ms to 166 ms (tests/bench/engine).
    """
    reported = column[key].as_string()
    has_key = _HasKey(column, sa.literal(key), sa.literal(f'$."{key}"'))
    return sa.or_(sa.not_(has_key), reported.is_(None), reported == value)


def device_conditions(where: DeviceFilter, c: Any = devices.c) -> list[sa.ColumnElement[bool]]:
    """The filter as SQL conditions on `c`: the devices table's columns, or a subquery's."""
    found: list[sa.ColumnElement[bool]] = []
    if where.membership and not where.tags:
        return [sa.false()]  # members come from operator-set tags only (see DeviceFilter)
    for name, key in REPORTED_FIELDS.items():
        wanted = getattr(where, name)
        if wanted is not None:
            found.append(getattr(c, name) == wanted)
            found.append(_reported_absent_or(c.reported, key, wanted))
    for key, value in where.tags.items():
        found.append(c.tags[key].as_string() == value)
    if where.last_seen_after is not None:
        found.append(c.last_seen >= where.last_seen_after)
    if where.last_seen_before is not None:
        found.append(c.last_seen < where.last_seen_before)
    return found


@translate_errors
class SqlDevices:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn  # one unit of work: one transaction
        self._incoming_used = False

    def upsert(self, items: Iterable[Device]) -> int:
        count = changed = 0
        postgres = self._conn.dialect.name == "postgresql"
        for batch in chunks(items, UPSERT_CHUNK):
            count += len(batch)
            if postgres:
                changed += self._merge_postgresql(batch)
            else:
                executemany(self._conn, _SQLITE_UPSERT, _sqlite_rows(batch))
        if postgres and changed and self._statistics_are_stale(changed):
            # A registry sync of many devices: fresh statistics now, not at autovacuum's pace,
            # or the planner scans a million devices it believes are a few thousand.
            self._conn.exec_driver_sql(f"ANALYZE {devices.name}")
        return count

    def _merge_postgresql(self, batch: Sequence[Device]) -> int:
        """COPY the batch into the incoming table, merge it; returns the rows written."""
        # Commit and rollback empty the table; a second batch in this transaction empties it.
        if self._incoming_used:
            self._conn.exec_driver_sql(f"TRUNCATE {_PG_INCOMING}")
        else:
            self._conn.exec_driver_sql(_PG_CREATE_INCOMING)
            self._incoming_used = True
        rows = map(_pg_row, _last_of_each(batch))
        copy_rows(self._conn, _PG_INCOMING, _DEVICE_COLUMNS, _PG_TYPES, rows)
        return int(self._conn.exec_driver_sql(_PG_MERGE).rowcount)

    def _statistics_are_stale(self, changed: int) -> bool:
        """The rows changed since the last ANALYZE (this call's included, counted across
        calls and sessions by PostgreSQL's statistics) are ANALYZE_AFTER or more, and at least
        as many as the planner believes the table holds: its estimates are off by 2x or more.

        So a table growing by bulk loads is analyzed at 10k, 20k, 40k, ... rows, and a sync in
        small batches renews the statistics too. Renewing them after every call of 10k rows
        instead cost more than the writes in a bulk load of a million (each ANALYZE then reads
        most of the table).
        """
        since, believed = self._conn.exec_driver_sql(
            "SELECT pg_stat_get_mod_since_analyze(oid), reltuples FROM pg_class "
            f"WHERE oid = '{devices.name}'::regclass"
        ).one()
        return bool(int(since) + changed >= max(float(believed), ANALYZE_AFTER))

    def get(self, device_id: str) -> Device:
        row = self._conn.execute(sa.select(devices).where(devices.c.id == device_id)).first()
        if row is None:
            raise NotFoundError("device", device_id)
        return _device(row)

    def list(
        self, where: DeviceFilter, *, after: str | None = None, limit: int = 100
    ) -> Page[Device]:
        check_limit(limit)
        query = sa.select(devices).where(*device_conditions(where))
        if after is not None:
            query = query.where(devices.c.id > after)
        rows = self._conn.execute(query.order_by(devices.c.id).limit(limit + 1)).all()
        items = [_device(row) for row in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    def hardware_ids(self, device_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for batch in chunks(unique(list(device_ids))):
            query = sa.select(devices.c.id, devices.c.hardware_id).where(devices.c.id.in_(batch))
            found.update({row.id: row.hardware_id for row in self._conn.execute(query)})
        return found

    def count(self, where: DeviceFilter) -> int:
        query = sa.select(sa.func.count()).select_from(devices).where(*device_conditions(where))
        return int(self._conn.execute(query).scalar_one())


def group_from_row(row: sa.Row[Any]) -> DeviceGroup:
    return DeviceGroup(
        id=row.id,
        name=row.name,
        kind=GroupKind(row.kind),
        selector=row.selector,
        time_zone=row.time_zone,
        production=row.production,
    )


@translate_errors
class SqlDeviceGroups:
    def __init__(self, conn: sa.Connection, devices_repo: SqlDevices) -> None:
        self._conn = conn
        self._devices = devices_repo

    def put(self, group: DeviceGroup) -> None:
        values = {
            "id": group.id,
            "name": group.name,
            "kind": group.kind.value,
            "selector": group.selector,
            "time_zone": group.time_zone,
            "production": group.production,
        }
        insert = upsert_insert(self._conn, device_groups).values(values)
        taken = self._conn.execute(
            sa.select(device_groups.c.id).where(
                device_groups.c.name == group.name, device_groups.c.id != group.id
            )
        ).first()
        if taken is not None:
            raise AlreadyExistsError("group name", group.name)
        self._conn.execute(
            insert.on_conflict_do_update(
                index_elements=[device_groups.c.id],
                set_={k: getattr(insert.excluded, k) for k in values if k != "id"},
            )
        )

    def get(self, group_id: str) -> DeviceGroup:
        query = sa.select(device_groups).where(device_groups.c.id == group_id)
        row = self._conn.execute(query).first()
        if row is None:
            raise NotFoundError("group", group_id)
        return group_from_row(row)

    def list(self) -> builtins.list[DeviceGroup]:
        query = sa.select(device_groups).order_by(device_groups.c.id)
        return [group_from_row(row) for row in self._conn.execute(query)]

    def delete(self, group_id: str) -> None:
        self.get(group_id)
        used = self._conn.execute(
            sa.select(rollouts.c.id).where(rollouts.c.group_id == group_id).limit(1)
        ).first()
        if used is not None:
            raise ConflictError(f"group {group_id!r} is used by a rollout")
        self._conn.execute(sa.delete(device_groups).where(device_groups.c.id == group_id))

    def members(self, group_id: str, *, after: str | None = None, limit: int = 100) -> Page[Device]:
        return self._devices.list(group_filter(self.get(group_id)), after=after, limit=limit)

    def member_ids(self, group_id: str, *, after: str | None = None, limit: int = 100) -> Page[str]:
        check_limit(limit)
        # The next `limit` devices by primary key, in a LIMIT subquery the planner cannot
        # flatten, then the selector on its rows: an index range whatever the planner believes
        # about a JSON selector's selectivity (it guesses 0.5% and would scan every device).
        window = window_of_devices(after, limit)
        size, last = self._conn.execute(sa.select(sa.func.count(), sa.func.max(window.c.id))).one()
        query = (
            sa.select(window.c.id)
            .where(*device_conditions(group_filter(self.get(group_id)), window.c))
            .order_by(window.c.id)
        )
        return Page(list(self._conn.execute(query).scalars()), last if size == limit else None)

    def members_among(self, group_id: str, device_ids: Sequence[str]) -> set[str]:
        conditions = device_conditions(group_filter(self.get(group_id)))
        found: set[str] = set()
        for batch in chunks(unique(device_ids)):
            query = sa.select(devices.c.id).where(devices.c.id.in_(batch), *conditions)
            found.update(self._conn.execute(query).scalars())
        return found


def _release(row: sa.Row[Any]) -> Release:
    return Release(
        id=row.id,
        counter=row.counter,
        hardware_ids=tuple(row.hardware_ids),
        manifest=row.manifest,
        created_at=row.created_at,
        created_by=row.created_by,
    )


@translate_errors
class SqlReleases:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def create(self, release: Release) -> None:
        # ON CONFLICT DO NOTHING rather than catching the unique violation: on PostgreSQL a
        # failed statement would abort the caller's whole unit of work.
        statement = (
            upsert_insert(self._conn, releases)
            .values(
                id=release.id,
                counter=release.counter,
                hardware_ids=list(release.hardware_ids),
                manifest=dict(release.manifest),
                created_at=release.created_at,
                created_by=release.created_by,
            )
            .on_conflict_do_nothing(index_elements=[releases.c.id])
            .returning(releases.c.id)
        )
        if self._conn.execute(statement).first() is None:
            raise AlreadyExistsError("release", release.id)

    def get(self, release_id: str) -> Release:
        row = self._conn.execute(sa.select(releases).where(releases.c.id == release_id)).first()
        if row is None:
            raise NotFoundError("release", release_id)
        return _release(row)

    def list(self, *, after: str | None = None, limit: int = 100) -> Page[Release]:
        check_limit(limit)
        query = sa.select(releases)
        if after is not None:
            query = query.where(releases.c.id > after)
        rows = self._conn.execute(query.order_by(releases.c.id).limit(limit + 1)).all()
        items = [_release(row) for row in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)
