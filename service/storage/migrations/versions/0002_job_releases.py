"""Device jobs name their release: a device may hold its forward job and a rollback job in one
rollout. Adds `release_id` (part of the primary key) and `order_key` (the planner's stage hash,
shifted into a signed 64-bit range) with the index the engine's candidate query walks, and
extends the (rollout, state, device) index by the release so that a page of one state's jobs
is read in key order straight from it. The job -> device foreign key goes (see below).

Existing jobs get the release of their rollout and an `order_key` of 0 (their offer order within
a stage then falls back to the device id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_CANDIDATES = "ix_device_jobs_rollout_id_release_id_state_stage_order_key"
_BY_STATE_OLD = "ix_device_jobs_rollout_id_state_device_id"
_BY_STATE = "ix_device_jobs_rollout_id_state_device_id_release_id"  # pages in key order


def upgrade() -> None:
    with op.batch_alter_table("device_jobs") as batch:
        batch.add_column(sa.Column("release_id", sa.String(200), nullable=True))
        batch.add_column(
            sa.Column("order_key", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE device_jobs SET release_id = "
        "(SELECT rollouts.release_id FROM rollouts WHERE rollouts.id = device_jobs.rollout_id)"
    )
    with op.batch_alter_table("device_jobs") as batch:
        batch.alter_column("release_id", existing_type=sa.String(200), nullable=False)
        batch.drop_constraint("pk_device_jobs", type_="primary")
        batch.create_primary_key("pk_device_jobs", ["rollout_id", "device_id", "release_id"])
        # Checked by the repository instead (`jobs.add`), not per row by the database: the
        # per-row check cost 20 of 31 s when planning a million jobs on PostgreSQL, and
        # devices and releases are never deleted.
        batch.drop_constraint("fk_device_jobs_device_id_devices", type_="foreignkey")
    op.create_index(
        _CANDIDATES, "device_jobs", ["rollout_id", "release_id", "state", "stage", "order_key"]
    )
    op.drop_index(_BY_STATE_OLD, table_name="device_jobs")
    op.create_index(_BY_STATE, "device_jobs", ["rollout_id", "state", "device_id", "release_id"])


def downgrade() -> None:
    op.drop_index(_BY_STATE, table_name="device_jobs")
    op.create_index(_BY_STATE_OLD, "device_jobs", ["rollout_id", "state", "device_id"])
    op.drop_index(_CANDIDATES, table_name="device_jobs")
    # Keep one job per (rollout, device): the forward one.
    op.execute(
        "DELETE FROM device_jobs WHERE release_id <> "
        "(SELECT rollouts.release_id FROM rollouts WHERE rollouts.id = device_jobs.rollout_id)"
    )
    with op.batch_alter_table("device_jobs") as batch:
        batch.create_foreign_key(
            "fk_device_jobs_device_id_devices", "devices", ["device_id"], ["id"]
        )
        batch.drop_constraint("pk_device_jobs", type_="primary")
        batch.create_primary_key("pk_device_jobs", ["rollout_id", "device_id"])
        batch.drop_column("order_key")
        batch.drop_column("release_id")
