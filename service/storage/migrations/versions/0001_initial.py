"""The initial schema: registry, releases, rollouts, device jobs, outbox, audit, tokens, lease.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.storage._schema import BIGID, JSON_TYPE, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The audit log is append-only in the database itself, not only by convention in our code.
_SQLITE_AUDIT_GUARDS = [
    f"""CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"""
    for verb in ("UPDATE", "DELETE")
]
_PG_AUDIT_GUARDS = [
    """CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("hardware_id", sa.String(200), nullable=False),
        sa.Column("profile", sa.String(200), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("tags", JSON_TYPE, nullable=False),
        sa.Column("reported", JSON_TYPE, nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_hardware_id_id", "devices", ["hardware_id", "id"])
    op.create_index("ix_devices_last_seen", "devices", ["last_seen"])

    op.create_table(
        "device_groups",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("production", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_device_groups"),
        sa.UniqueConstraint("name", name="uq_device_groups_name"),
        sa.CheckConstraint("kind IN ('tag', 'query')", name="ck_device_groups_kind"),
    )

    op.create_table(
        "releases",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("hardware_ids", JSON_TYPE, nullable=False),
        sa.Column("manifest", JSON_TYPE, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_releases"),
    )

    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("group_id", sa.String(200), nullable=False),
        sa.Column("release_id", sa.String(200), nullable=False),
        sa.Column("previous_release_id", sa.String(200), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("spec", JSON_TYPE, nullable=False),
        sa.Column("state_data", JSON_TYPE, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
        sa.ForeignKeyConstraint(
            ["group_id"], ["device_groups.id"], name="fk_rollouts_group_id_device_groups"
        ),
        sa.ForeignKeyConstraint(
            ["release_id"], ["releases.id"], name="fk_rollouts_release_id_releases"
        ),
        sa.ForeignKeyConstraint(
            ["previous_release_id"],
            ["releases.id"],
            name="fk_rollouts_previous_release_id_releases",
        ),
    )
    op.create_index("ix_rollouts_state", "rollouts", ["state"])
    op.create_index("ix_rollouts_group_id", "rollouts", ["group_id"])

    op.create_table(
        "rollout_stages",
        sa.Column("rollout_id", sa.String(200), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("data", JSON_TYPE, nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "idx", name="pk_rollout_stages"),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name="fk_rollout_stages_rollout_id_rollouts",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "device_jobs",
        sa.Column("rollout_id", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("offered_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "device_id", name="pk_device_jobs"),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name="fk_device_jobs_rollout_id_rollouts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_jobs_device_id_devices"
        ),
    )
    op.create_index(
        "ix_device_jobs_rollout_id_state_device_id",
        "device_jobs",
        ["rollout_id", "state", "device_id"],
    )
    op.create_index("ix_device_jobs_next_attempt_at", "device_jobs", ["next_attempt_at"])
    op.create_index("ix_device_jobs_device_id", "device_jobs", ["device_id"])

    op.create_table(
        "outbox",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("dispatched_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_dispatched_at_id", "outbox", ["dispatched_at", "id"])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("details", JSON_TYPE, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
        sa.UniqueConstraint("hash", name="uq_audit_log_hash"),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'release-signer', 'admin')", name="ck_api_tokens_role"
        ),
    )

    op.create_table(
        "engine_lease",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_engine_lease"),
    )

    guards = (
        _PG_AUDIT_GUARDS if op.get_bind().dialect.name == "postgresql" else _SQLITE_AUDIT_GUARDS
    )
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for table in (
        "engine_lease",
        "api_tokens",
        "audit_log",
        "outbox",
        "device_jobs",
        "rollout_stages",
        "rollouts",
        "releases",
        "device_groups",
        "devices",
    ):
        op.drop_table(table)  # SQLite drops the table's triggers with it
