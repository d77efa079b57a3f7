"""SQL repositories for the registry: devices, device groups and releases."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
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
from service.storage._sql_base import chunks, translate_errors, unique, upsert_insert

__all__ = ["SqlDeviceGroups", "SqlDevices", "SqlReleases"]

_DEVICE_UPDATED = ("hardware_id", "profile", "agent_version", "tags", "reported", "last_seen")


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
        self._conn = conn

    def upsert(self, items: Iterable[Device]) -> int:
        count = 0
        insert = upsert_insert(self._conn, devices)
        statement = insert.on_conflict_do_update(
            index_elements=[devices.c.id],
            set_={name: getattr(insert.excluded, name) for name in _DEVICE_UPDATED},
        )
        for batch in chunks(items):
            rows = [
                {
                    "id": d.id,
                    "hardware_id": d.hardware_id,
                    "profile": d.profile,
                    "agent_version": d.agent_version,
                    "tags": dict(d.tags),
                    "reported": dict(d.reported),
                    "last_seen": d.last_seen,
                    "created_at": d.created_at,
                }
                for d in batch
            ]
            self._conn.execute(statement, rows)
            count += len(rows)
        if count >= ANALYZE_AFTER and self._conn.dialect.name == "postgresql":
            # A registry sync of many devices: fresh statistics now, not at autovacuum's pace,
            # or the planner scans a million devices it believes are a few thousand.
            self._conn.exec_driver_sql(f"ANALYZE {devices.name}")
        return count

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
