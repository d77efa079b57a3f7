"""In-memory storage: the same port and contract as the SQL adapter, for engine unit tests.

The registry, rollout and job repositories live here; the bookkeeping ones in `_memory_ops.py`.

A unit of work holds one lock for its whole duration (like SQLite's single writer) and works
on the live tables after taking a shallow snapshot of them; an exception restores the snapshot.
Records are frozen, so a shallow copy is a full snapshot.
"""

from __future__ import annotations

import builtins
import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

from service.storage._errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    RevisionConflictError,
)
from service.storage._memory_jobs import MemoryJobs, matches
from service.storage._memory_ops import (
    MemoryAuditLog,
    MemoryEngineLeases,
    MemoryOutbox,
    MemoryTokens,
)
from service.storage._port import check_limit
from service.storage._records import (
    ApiToken,
    AuditEntry,
    Device,
    DeviceFilter,
    DeviceGroup,
    DeviceJob,
    Lease,
    OutboxMessage,
    Page,
    Release,
    Rollout,
    RolloutStage,
    group_filter,
)

__all__ = ["MemoryStorage"]

T = TypeVar("T")


def _page(items: Iterable[T], key: Callable[[T], str], after: str | None, limit: int) -> Page[T]:
    check_limit(limit)
    chosen = sorted((i for i in items if after is None or key(i) > after), key=key)[: limit + 1]
    more = len(chosen) > limit
    chosen = chosen[:limit]
    return Page(chosen, key(chosen[-1]) if more else None)


@dataclass
class _Tables:
    devices: dict[str, Device] = field(default_factory=dict)
    groups: dict[str, DeviceGroup] = field(default_factory=dict)
    releases: dict[str, Release] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    stages: dict[tuple[str, int], RolloutStage] = field(default_factory=dict)
    jobs: dict[tuple[str, str, str], DeviceJob] = field(default_factory=dict)
    outbox: dict[int, OutboxMessage] = field(default_factory=dict)
    outbox_next: int = 1
    audit: list[AuditEntry] = field(default_factory=list)
    tokens: dict[str, tuple[ApiToken, str]] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)

    def snapshot(self) -> _Tables:
        copied = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, dict | list):
                setattr(copied, name, copy.copy(value))
        return copied


class _Devices:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def upsert(self, devices: Iterable[Device]) -> int:
        count = 0
        for device in devices:
            old = self._t.devices.get(device.id)
            self._t.devices[device.id] = (
                replace(device, created_at=old.created_at) if old else device
            )
            count += 1
        return count

    def get(self, device_id: str) -> Device:
        try:
            return self._t.devices[device_id]
        except KeyError:
            raise NotFoundError("device", device_id) from None

    def list(
        self, where: DeviceFilter, *, after: str | None = None, limit: int = 100
    ) -> Page[Device]:
        found = (d for d in self._t.devices.values() if matches(d, where))
        return _page(found, lambda d: d.id, after, limit)

    def hardware_ids(self, device_ids: Sequence[str]) -> dict[str, str]:
        found = (self._t.devices.get(d) for d in device_ids)
        return {d.id: d.hardware_id for d in found if d is not None}

    def count(self, where: DeviceFilter) -> int:
        return sum(1 for d in self._t.devices.values() if matches(d, where))


class _Groups:
    def __init__(self, t: _Tables, devices: _Devices) -> None:
        self._t, self._devices = t, devices

    def put(self, group: DeviceGroup) -> None:
        if any(g.name == group.name and g.id != group.id for g in self._t.groups.values()):
            raise AlreadyExistsError("group name", group.name)
        self._t.groups[group.id] = group

    def get(self, group_id: str) -> DeviceGroup:
        try:
            return self._t.groups[group_id]
        except KeyError:
            raise NotFoundError("group", group_id) from None

    def list(self) -> builtins.list[DeviceGroup]:
        return sorted(self._t.groups.values(), key=lambda g: g.id)

    def delete(self, group_id: str) -> None:
        self.get(group_id)
        if any(r.group_id == group_id for r in self._t.rollouts.values()):
            raise ConflictError(f"group {group_id!r} is used by a rollout")
        del self._t.groups[group_id]

    def members(self, group_id: str, *, after: str | None = None, limit: int = 100) -> Page[Device]:
        return self._devices.list(group_filter(self.get(group_id)), after=after, limit=limit)

    def member_ids(self, group_id: str, *, after: str | None = None, limit: int = 100) -> Page[str]:
        check_limit(limit)
        where = group_filter(self.get(group_id))
        window = sorted(d for d in self._t.devices if after is None or d > after)[:limit]
        found = [d for d in window if matches(self._t.devices[d], where)]
        return Page(found, window[-1] if len(window) == limit else None)

    def members_among(self, group_id: str, device_ids: Sequence[str]) -> set[str]:
        where = group_filter(self.get(group_id))
        found = (self._t.devices.get(d) for d in device_ids)
        return {d.id for d in found if d is not None and matches(d, where)}


class _Releases:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def create(self, release: Release) -> None:
        if release.id in self._t.releases:
            raise AlreadyExistsError("release", release.id)
        self._t.releases[release.id] = release

    def get(self, release_id: str) -> Release:
        try:
            return self._t.releases[release_id]
        except KeyError:
            raise NotFoundError("release", release_id) from None

    def list(self, *, after: str | None = None, limit: int = 100) -> Page[Release]:
        return _page(self._t.releases.values(), lambda r: r.id, after, limit)


class _Rollouts:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def create(self, rollout: Rollout) -> Rollout:
        if rollout.id in self._t.rollouts:
            raise AlreadyExistsError("rollout", rollout.id)
        if rollout.group_id not in self._t.groups:
            raise NotFoundError("group", rollout.group_id)
        for release_id in (rollout.release_id, rollout.previous_release_id):
            if release_id is not None and release_id not in self._t.releases:
                raise NotFoundError("release", release_id)
        stored = replace(rollout, revision=1)
        self._t.rollouts[rollout.id] = stored
        return stored

    def get(self, rollout_id: str) -> Rollout:
        try:
            return self._t.rollouts[rollout_id]
        except KeyError:
            raise NotFoundError("rollout", rollout_id) from None

    def save(self, rollout: Rollout, expected_revision: int) -> Rollout:
        current = self.get(rollout.id)
        if current.revision != expected_revision:
            raise RevisionConflictError(rollout.id, expected_revision, current.revision)
        stored = replace(rollout, revision=expected_revision + 1, created_at=current.created_at)
        self._t.rollouts[rollout.id] = stored
        return stored

    def list(
        self, *, states: Sequence[str] | None = None, group_id: str | None = None
    ) -> builtins.list[Rollout]:
        return sorted(
            (
                r
                for r in self._t.rollouts.values()
                if (states is None or r.state in states)
                and (group_id is None or r.group_id == group_id)
            ),
            key=lambda r: (r.created_at, r.id),
        )

    def put_stage(self, stage: RolloutStage) -> None:
        self.get(stage.rollout_id)
        self._t.stages[(stage.rollout_id, stage.index)] = stage

    def stages(self, rollout_id: str) -> builtins.list[RolloutStage]:
        found = [s for (rid, _), s in self._t.stages.items() if rid == rollout_id]
        return sorted(found, key=lambda s: s.index)


class _MemoryUnit:
    def __init__(self, t: _Tables) -> None:
        self.devices = _Devices(t)
        self.groups = _Groups(t, self.devices)
        self.releases = _Releases(t)
        self.rollouts = _Rollouts(t)
        self.jobs = MemoryJobs(t)
        self.outbox = MemoryOutbox(t)
        self.audit = MemoryAuditLog(t)
        self.tokens = MemoryTokens(t)
        self.leases = MemoryEngineLeases(t)


class MemoryStorage:
    """Storage in process memory; nothing survives the process. Thread-safe."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._lock = threading.RLock()

    @contextmanager
    def begin(self, *, readonly: bool = False) -> Iterator[_MemoryUnit]:
        with self._lock:
            saved = self._tables.snapshot()
            try:
                yield _MemoryUnit(self._tables)
            except BaseException:
                # Restore in place so that units holding `self._tables` see the rollback.
                vars(self._tables).update(vars(saved))
                raise

    def close(self) -> None:
        """Nothing to release."""
