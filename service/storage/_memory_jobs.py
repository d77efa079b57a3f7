"""In-memory device jobs (part of `MemoryStorage`, see `_memory.py`): keyed by (rollout,
device, release), with the same set-based queries as the SQL adapter."""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from service.storage._errors import ConflictError, NotFoundError
from service.storage._port import LIVE_JOB_STATES, check_limit, job_cursor, parse_job_cursor
from service.storage._records import (
    REPORTED_FIELDS,
    Device,
    DeviceFilter,
    DeviceJob,
    Page,
    group_filter,
)

if TYPE_CHECKING:
    from service.storage._memory import _Tables

__all__ = ["MemoryJobs", "matches"]


def _described(device: Device, name: str, wanted: str | None) -> bool:
    """The device is what `wanted` says by its column and, if it reported the field, by its
    own report too (a report can only narrow; see `DeviceFilter`)."""
    if wanted is None:
        return True
    reported = device.reported.get(REPORTED_FIELDS[name])
    return getattr(device, name) == wanted and (reported is None or reported == wanted)


def matches(device: Device, where: DeviceFilter) -> bool:
    if where.membership and not where.tags:
        return False
    if not all(_described(device, n, getattr(where, n)) for n in REPORTED_FIELDS):
        return False
    if any(device.tags.get(k) != v for k, v in where.tags.items()):
        return False
    if where.last_seen_after is not None and (
        device.last_seen is None or device.last_seen < where.last_seen_after
    ):
        return False
    return where.last_seen_before is None or (
        device.last_seen is not None and device.last_seen < where.last_seen_before
    )


def _job_key(job: DeviceJob) -> tuple[str, str, str]:
    return (job.rollout_id, job.device_id, job.release_id)


class MemoryJobs:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def _release(self, rollout_id: str, release_id: str | None) -> str:
        if release_id is not None:
            return release_id
        rollout = self._t.rollouts.get(rollout_id)
        return rollout.release_id if rollout is not None else ""

    def add(self, jobs: Iterable[DeviceJob]) -> int:
        inserted = 0
        for job in jobs:
            if job.rollout_id not in self._t.rollouts:
                raise NotFoundError("rollout", job.rollout_id)
            if job.device_id not in self._t.devices:
                raise NotFoundError("device", job.device_id)
            if job.release_id not in self._t.releases:
                raise NotFoundError("release", job.release_id)
            if _job_key(job) not in self._t.jobs:
                self._t.jobs[_job_key(job)] = job
                inserted += 1
        return inserted

    def plan(
        self,
        rollout_id: str,
        release_id: str,
        rows: Iterable[tuple[str, int, int]],
        now: datetime,
    ) -> int:
        jobs = [
            DeviceJob(
                rollout_id, device_id, stage, "pending", now, release_id=release_id, order_key=key
            )
            for device_id, stage, key in rows
        ]
        if rollout_id not in self._t.rollouts:
            raise NotFoundError("rollout", rollout_id)
        if any(_job_key(j) in self._t.jobs for j in jobs):
            raise ConflictError(f"rollout {rollout_id} already has jobs")
        for job in jobs:
            self._t.jobs[_job_key(job)] = job
        return len(jobs)

    def offer(
        self,
        rollout_id: str,
        release_id: str,
        device_ids: Sequence[str],
        now: datetime,
        deadline: datetime | None = None,
    ) -> int:
        moved = 0
        for device_id in dict.fromkeys(device_ids):
            job = self._t.jobs.get((rollout_id, device_id, release_id))
            if job is None or job.state != "pending":
                continue
            self._t.jobs[_job_key(job)] = replace(
                job,
                state="offered",
                attempts=job.attempts + 1,
                offered_at=now,
                next_attempt_at=deadline,
                updated_at=now,
            )
            moved += 1
        return moved

    def get(self, rollout_id: str, device_id: str, release_id: str | None = None) -> DeviceJob:
        key = (rollout_id, device_id, self._release(rollout_id, release_id))
        try:
            return self._t.jobs[key]
        except KeyError:
            raise NotFoundError("device job", key) from None

    def update(self, job: DeviceJob, *, expected_state: str | None = None) -> None:
        current = self.get(job.rollout_id, job.device_id, job.release_id)
        if expected_state is not None and current.state != expected_state:
            raise ConflictError(
                f"job {job.rollout_id}/{job.device_id}/{job.release_id} is {current.state}, "
                f"not {expected_state}"
            )
        self._t.jobs[_job_key(job)] = job

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
        moved = 0
        release = self._release(rollout_id, release_id)
        for device_id in dict.fromkeys(device_ids):
            job = self._t.jobs.get((rollout_id, device_id, release))
            if job is None or job.state not in from_states:
                continue
            self._t.jobs[_job_key(job)] = replace(
                job,
                state=to_state,
                reason=reason,
                next_attempt_at=next_attempt_at,
                updated_at=now,
                offered_at=now if offered else job.offered_at,
                attempts=job.attempts + 1 if count_attempt else job.attempts,
            )
            moved += 1
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
        chosen = [
            j for j in self._of(rollout_id) if j.release_id == release_id and j.state in from_states
        ]
        for job in chosen:
            self._t.jobs[_job_key(job)] = replace(
                job, state=to_state, reason=reason, next_attempt_at=None, updated_at=now
            )
        return len(chosen)

    def _of(self, rollout_id: str) -> Iterator[DeviceJob]:
        return (j for (rid, _, _), j in self._t.jobs.items() if rid == rollout_id)

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
        found = [
            j
            for j in self._of(rollout_id)
            if (states is None or j.state in states)
            and (release_id is None or j.release_id == release_id)
        ]
        if after is not None:
            device, release = parse_job_cursor(after)
            found = [
                j
                for j in found
                if j.device_id > device
                or (release is not None and j.device_id == device and j.release_id > release)
            ]
        found.sort(key=lambda j: (j.device_id, j.release_id))
        more = len(found) > limit
        items = found[:limit]
        return Page(items, job_cursor(items[-1]) if more else None)

    def count_by_state(
        self, rollout_id: str, *, stage: int | None = None, release_id: str | None = None
    ) -> dict[str, int]:
        return dict(
            Counter(
                j.state
                for j in self._of(rollout_id)
                if (stage is None or j.stage == stage)
                and (release_id is None or j.release_id == release_id)
            )
        )

    def figures(self, rollout_id: str) -> dict[tuple[str, int], dict[str, int]]:
        found: dict[tuple[str, int], dict[str, int]] = {}
        for j in self._of(rollout_id):
            counts = found.setdefault((j.release_id, j.stage), {})
            counts[j.state] = counts.get(j.state, 0) + 1
        return found

    def candidates(
        self, rollout_id: str, release_id: str, *, max_stage: int, now: datetime, limit: int
    ) -> builtins.list[DeviceJob]:
        check_limit(limit)
        busy = {
            did
            for (rid, did, _), j in self._t.jobs.items()
            if rid != rollout_id and j.state in LIVE_JOB_STATES
        }
        found = [
            j
            for j in self._of(rollout_id)
            if j.release_id == release_id
            and j.state == "pending"
            and j.stage <= max_stage
            and (j.next_attempt_at is None or j.next_attempt_at <= now)
            and j.device_id not in busy
        ]
        found.sort(key=lambda j: (j.stage, j.order_key, j.device_id))
        return found[:limit]

    def joiners(
        self, rollout_id: str, group_id: str, *, after: str | None = None, scan: int = 1000
    ) -> Page[str]:
        check_limit(scan)
        try:
            group = self._t.groups[group_id]
        except KeyError:
            raise NotFoundError("group", group_id) from None
        where = group_filter(group)
        window = sorted(d for d in self._t.devices if after is None or d > after)[:scan]
        planned = {did for rid, did, _ in self._t.jobs if rid == rollout_id}
        found = [d for d in window if d not in planned and matches(self._t.devices[d], where)]
        return Page(found, window[-1] if len(window) == scan else None)

    def due(self, now: datetime, *, limit: int = 100) -> builtins.list[DeviceJob]:
        check_limit(limit)
        found = [j for j in self._t.jobs.values() if j.next_attempt_at and j.next_attempt_at <= now]
        found.sort(key=lambda j: (j.next_attempt_at or now, j.rollout_id, j.device_id))
        return found[:limit]

    def for_device(self, device_id: str) -> builtins.list[DeviceJob]:
        return sorted(
            (j for (_, did, _), j in self._t.jobs.items() if did == device_id),
            key=lambda j: (j.rollout_id, j.release_id),
        )
