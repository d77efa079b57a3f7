"""SQL repository for rollouts (with their stages); device jobs are in `_sql_jobs.py`."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from service.storage._errors import (
    AlreadyExistsError,
    NotFoundError,
    RevisionConflictError,
)
from service.storage._records import (
    Rollout,
    RolloutStage,
)
from service.storage._schema import (
    device_groups,
    releases,
    rollout_stages,
    rollouts,
)
from service.storage._sql_base import translate_errors, upsert_insert

__all__ = ["SqlRollouts"]


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
