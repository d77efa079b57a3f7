"""Planning speed: device jobs lose their foreign key to rollouts, and jobs without a retry
time or deadline leave the `next_attempt_at` index.

Planning a rollout inserts one PENDING job per group member in one unit. At a million jobs the
per-row foreign-key check on `rollout_id` cost ≈2.8 s on PostgreSQL; `jobs.add` and `jobs.plan`
check the rollout instead, and rollouts are never deleted (so the cascade never ran). A planned
job has no `next_attempt_at`; a partial index (`IS NOT NULL`) keeps those out of it, and `due`
(`next_attempt_at <= now`, which implies NOT NULL on both databases) still walks it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FK = "fk_device_jobs_rollout_id_rollouts"
_NEXT = "ix_device_jobs_next_attempt_at"
_NOT_NULL = sa.text("next_attempt_at IS NOT NULL")


def upgrade() -> None:
    op.drop_index(_NEXT, table_name="device_jobs")
    with op.batch_alter_table("device_jobs") as batch:
        batch.drop_constraint(_FK, type_="foreignkey")
    op.create_index(
        _NEXT,
        "device_jobs",
        ["next_attempt_at"],
        sqlite_where=_NOT_NULL,
        postgresql_where=_NOT_NULL,
    )


def downgrade() -> None:
    op.drop_index(_NEXT, table_name="device_jobs")
    with op.batch_alter_table("device_jobs") as batch:
        batch.create_foreign_key(_FK, "rollouts", ["rollout_id"], ["id"], ondelete="CASCADE")
    op.create_index(_NEXT, "device_jobs", ["next_attempt_at"])
