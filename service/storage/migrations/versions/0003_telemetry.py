"""Telemetry: raw rows, the dedupe set, rollups, dead letters, partition positions, verdicts.

See `service/telemetry/_schema.py` for what each table holds.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.storage._schema import BIGID, JSON_TYPE, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _name() -> sa.Column[str]:
    return sa.Column("device_id", sa.String(200), nullable=False)


def upgrade() -> None:
    op.create_table(
        "telemetry_inference",
        _name(),
        sa.Column("release_id", sa.String(200), nullable=False),
        sa.Column("core", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("latency_us", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("anomaly", sa.Boolean(), nullable=True),
        sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "telemetry_health",
        _name(),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("agent_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("uptime_s", sa.BigInteger(), nullable=False),
        sa.Column("link_errors", sa.BigInteger(), nullable=False),
        sa.Column("dropped_records", sa.BigInteger(), nullable=False),
        sa.Column("cores_online", sa.Integer(), nullable=False),
        sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "telemetry_events",
        _name(),
        sa.Column("release_id", sa.String(200), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("core", sa.String(128), nullable=True),
        sa.Column("event_release_id", sa.String(200), nullable=True),
        sa.Column("code", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    )
    for table in ("telemetry_inference", "telemetry_health", "telemetry_events"):
        op.create_index(f"ix_{table}_device_id_ts_ms", table, ["device_id", "ts_ms"])
        op.create_index(f"ix_{table}_enqueued_ms", table, ["enqueued_ms"])

    op.create_table(
        "telemetry_seen",
        sa.Column("message_id", sa.String(300), nullable=False),
        sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_telemetry_seen"),
    )
    op.create_index("ix_telemetry_seen_enqueued_ms", "telemetry_seen", ["enqueued_ms"])

    keys = ["group_id", "release_id", "core", "model_id", "model_version", "bucket_ms", "partition"]
    op.create_table(
        "telemetry_rollups",
        sa.Column("group_id", sa.String(200), nullable=False),
        sa.Column("release_id", sa.String(200), nullable=False),
        sa.Column("core", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("rollup", JSON_TYPE, nullable=False),
        sa.Column("latency_hist", sa.LargeBinary(), nullable=False),
        sa.Column("score_hist", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(*keys, name="pk_telemetry_rollups"),
    )
    op.create_index(
        "ix_telemetry_rollups_group_id_release_id_bucket_ms",
        "telemetry_rollups",
        ["group_id", "release_id", "bucket_ms"],
    )
    op.create_index("ix_telemetry_rollups_bucket_ms", "telemetry_rollups", ["bucket_ms"])

    op.create_table(
        "telemetry_dead_letters",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=True),
        sa.Column("message_id", sa.String(300), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(1000), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_telemetry_dead_letters"),
    )
    op.create_index("ix_telemetry_dead_letters_reason", "telemetry_dead_letters", ["reason"])

    op.create_table(
        "telemetry_partitions",
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("committed_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("dead_letters", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("partition", name="pk_telemetry_partitions"),
    )

    op.create_table(
        "gate_verdicts",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.String(200), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("numbers", JSON_TYPE, nullable=False),
        sa.Column("metrics", JSON_TYPE, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gate_verdicts"),
    )
    op.create_index("ix_gate_verdicts_rollout_id_id", "gate_verdicts", ["rollout_id", "id"])


def downgrade() -> None:
    for table in (
        "gate_verdicts",
        "telemetry_partitions",
        "telemetry_dead_letters",
        "telemetry_rollups",
        "telemetry_seen",
        "telemetry_events",
        "telemetry_health",
        "telemetry_inference",
    ):
        op.drop_table(table)
