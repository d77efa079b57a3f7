"""SQL repositories for rollouts (with their stages) and device jobs."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.storage._errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    RevisionConflictError,
)
from service.storage._port import check_limit
from service.storage._records import DeviceJob, Page, Rollout, RolloutStage
from service.storage._schema import (
    device_groups,
    device_jobs,
    devices,
    releases,
    rollout_stages,
    rollouts,
)
from service.storage._sql_base import chunks, translate_errors, unique, upsert_insert

__all__ = ["SqlDeviceJobs", "SqlRollouts"]


def _rollout(row: sa.Row[Any]) -> Rollout:
    return Rollout(
        id=row.id,
        group_id=row.group_id,
        release_id=row.release_id,
        previous_release_id=row.previous_release_id,
        state=row.state,
        spec=row.spec,
        state_data=row.state_data,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _stage(row: sa.Row[Any]) -> RolloutStage:
    return RolloutStage(
        rollout_id=row.rollout_id,
        index=row.idx,
        state=row.state,
        planned=row.planned,
        started_at=row.started_at,
        ended_at=row.ended_at,
        data=row.data,
    )


@translate_errors
class SqlRollouts:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def _exists(self, table: sa.Table, key: str) -> bool:
        query = sa.select(table.c.id).where(table.c.id == key)
        return self._conn.execute(query).first() is not None

    def create(self, rollout: Rollout) -> Rollout:
        if not self._exists(device_groups, rollout.group_id):
            raise NotFoundError("group", rollout.group_id)
        for release_id in (rollout.release_id, rollout.previous_release_id):
            if release_id is not None and not self._exists(releases, release_id):
                raise NotFoundError("release", release_id)
        statement = (
            upsert_insert(self._conn, rollouts)
            .values(
                id=rollout.id,
                group_id=rollout.group_id,
                release_id=rollout.release_id,
                previous_release_id=rollout.previous_release_id,
                state=rollout.state,
                spec=dict(rollout.spec),
                state_data=dict(rollout.state_data),
                revision=1,
                created_at=rollout.created_at,
                updated_at=rollout.updated_at,
            )
            .on_conflict_do_nothing(index_elements=[rollouts.c.id])
            .returning(*rollouts.c)
        )
        row = self._conn.execute(statement).first()
        if row is None:
            raise AlreadyExistsError("rollout", rollout.id)
        return _rollout(row)

    def get(self, rollout_id: str) -> Rollout:
        row = self._conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFoundError("rollout", rollout_id)
        return _rollout(row)

    def save(self, rollout: Rollout, expected_revision: int) -> Rollout:
        # Compare-and-set in one statement: no read-then-write race between replicas.
        statement = (
            sa.update(rollouts)
            .where(rollouts.c.id == rollout.id, rollouts.c.revision == expected_revision)
            .values(
                group_id=rollout.group_id,
                release_id=rollout.release_id,
                previous_release_id=rollout.previous_release_id,
                state=rollout.state,
                spec=dict(rollout.spec),
                state_data=dict(rollout.state_data),
                revision=expected_revision + 1,
                updated_at=rollout.updated_at,
            )
            .returning(*rollouts.c)
        )
        row = self._conn.execute(statement).first()
        if row is None:
            current = self.get(rollout.id)  # raises NotFoundError when it is missing
            raise RevisionConflictError(rollout.id, expected_revision, current.revision)
        return _rollout(row)

    def list(
        self, *, states: Sequence[str] | None = None, group_id: str | None = None
    ) -> builtins.list[Rollout]:
        query = sa.select(rollouts)
        if states is not None:
            query = query.where(rollouts.c.state.in_(list(states)))
        if group_id is not None:
            query = query.where(rollouts.c.group_id == group_id)
        rows = self._conn.execute(query.order_by(rollouts.c.created_at, rollouts.c.id))
        return [_rollout(row) for row in rows]

    def put_stage(self, stage: RolloutStage) -> None:
        if not self._exists(rollouts, stage.rollout_id):
            raise NotFoundError("rollout", stage.rollout_id)
        values = {
            "rollout_id": stage.rollout_id,
            "idx": stage.index,
            "state": stage.state,
            "planned": stage.planned,
            "started_at": stage.started_at,
            "ended_at": stage.ended_at,
            "data": dict(stage.data),
        }
        insert = upsert_insert(self._conn, rollout_stages).values(values)
        self._conn.execute(
            insert.on_conflict_do_update(
                index_elements=[rollout_stages.c.rollout_id, rollout_stages.c.idx],
                set_={
                    k: getattr(insert.excluded, k) for k in values if k not in ("rollout_id", "idx")
                },
            )
        )

    def stages(self, rollout_id: str) -> builtins.list[RolloutStage]:
        query = (
            sa.select(rollout_stages)
            .where(rollout_stages.c.rollout_id == rollout_id)
            .order_by(rollout_stages.c.idx)
        )
        return [_stage(row) for row in self._conn.execute(query)]


def _job(row: sa.Row[Any]) -> DeviceJob:
    return DeviceJob(
        rollout_id=row.rollout_id,
        device_id=row.device_id,
        stage=row.stage,
        state=row.state,
        reason=row.reason,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        offered_at=row.offered_at,
        updated_at=row.updated_at,
    )


def _job_values(job: DeviceJob) -> dict[str, Any]:
    return {
        "rollout_id": job.rollout_id,
        "device_id": job.device_id,
        "stage": job.stage,
        "state": job.state,
        "reason": job.reason,
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at,
        "offered_at": job.offered_at,
        "updated_at": job.updated_at,
    }


@translate_errors
class SqlDeviceJobs:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, jobs: Iterable[DeviceJob]) -> int:
        inserted = 0
        known_rollouts: set[str] = set()
        statement = (
            upsert_insert(self._conn, device_jobs)
            .on_conflict_do_nothing(
                index_elements=[device_jobs.c.rollout_id, device_jobs.c.device_id]
            )
            .returning(device_jobs.c.device_id)
        )
        for batch in chunks(jobs):
            for rollout_id in {j.rollout_id for j in batch} - known_rollouts:
                query = sa.select(rollouts.c.id).where(rollouts.c.id == rollout_id)
                if self._conn.execute(query).first() is None:
                    raise NotFoundError("rollout", rollout_id)
                known_rollouts.add(rollout_id)
            wanted = unique([j.device_id for j in batch])
            query = sa.select(devices.c.id).where(devices.c.id.in_(wanted))
            missing = set(wanted) - set(self._conn.execute(query).scalars())
            if missing:
                raise NotFoundError("device", min(missing))
            result = self._conn.execute(statement, [_job_values(j) for j in batch])
            inserted += len(result.all())
        return inserted

    def get(self, rollout_id: str, device_id: str) -> DeviceJob:
        query = sa.select(device_jobs).where(
            device_jobs.c.rollout_id == rollout_id, device_jobs.c.device_id == device_id
        )
        row = self._conn.execute(query).first()
        if row is None:
            raise NotFoundError("device job", (rollout_id, device_id))
        return _job(row)

    def update(self, job: DeviceJob, *, expected_state: str | None = None) -> None:
        statement = sa.update(device_jobs).where(
            device_jobs.c.rollout_id == job.rollout_id, device_jobs.c.device_id == job.device_id
        )
        if expected_state is not None:
            statement = statement.where(device_jobs.c.state == expected_state)
        values = _job_values(job)
        del values["rollout_id"], values["device_id"]
        if self._conn.execute(statement.values(values)).rowcount == 0:
            current = self.get(job.rollout_id, job.device_id)
            raise ConflictError(
                f"job {job.rollout_id}/{job.device_id} is {current.state}, not {expected_state}"
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
            values["attempts"] = device_jobs.c.attempts + 1
        moved = 0
        for batch in chunks(unique(device_ids)):
            statement = (
                sa.update(device_jobs)
                .where(
                    device_jobs.c.rollout_id == rollout_id,
                    device_jobs.c.device_id.in_(batch),
                    device_jobs.c.state.in_(list(from_states)),
                )
                .values(values)
            )
            moved += self._conn.execute(statement).rowcount
        return moved

    def list(
        self,
        rollout_id: str,
        *,
        states: Sequence[str] | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[DeviceJob]:
        check_limit(limit)
        query = sa.select(device_jobs).where(device_jobs.c.rollout_id == rollout_id)
        if states is not None:
            query = query.where(device_jobs.c.state.in_(list(states)))
        if after is not None:
            query = query.where(device_jobs.c.device_id > after)
        query = query.order_by(device_jobs.c.device_id).limit(limit + 1)
        rows = self._conn.execute(query).all()
        items = [_job(row) for row in rows[:limit]]
        return Page(items, items[-1].device_id if len(rows) > limit else None)

    def count_by_state(self, rollout_id: str, *, stage: int | None = None) -> dict[str, int]:
        query = sa.select(device_jobs.c.state, sa.func.count()).where(
            device_jobs.c.rollout_id == rollout_id
        )
        if stage is not None:
            query = query.where(device_jobs.c.stage == stage)
        rows = self._conn.execute(query.group_by(device_jobs.c.state))
        return {state: int(count) for state, count in rows}

    def due(self, now: datetime, *, limit: int = 100) -> builtins.list[DeviceJob]:
        check_limit(limit)
        query = (
            sa.select(device_jobs)
            .where(device_jobs.c.next_attempt_at <= now)
            .order_by(
                device_jobs.c.next_attempt_at, device_jobs.c.rollout_id, device_jobs.c.device_id
            )
            .limit(limit)
        )
        return [_job(row) for row in self._conn.execute(query)]

    def for_device(self, device_id: str) -> builtins.list[DeviceJob]:
        query = (
            sa.select(device_jobs)
            .where(device_jobs.c.device_id == device_id)
            .order_by(device_jobs.c.rollout_id)
        )
        return [_job(row) for row in self._conn.execute(query)]
