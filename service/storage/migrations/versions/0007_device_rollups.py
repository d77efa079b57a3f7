"""Telemetry rollups per device: the gate picks a stage's own devices out of them, and the
statistics can work at device level (devices, not rows, are the independent units).

Keyed like `telemetry_rollups` with the device in place of the group; see
`service/telemetry/_schema.py`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.storage._schema import JSON_TYPE

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLE = "telemetry_device_rollups"


def upgrade() -> None:
    keys = [
        "device_id",
        "release_id",
        "core",
        "model_id",
        "model_version",
        "bucket_ms",
        "partition",
    ]
    op.create_table(
        _TABLE,
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("release_id", sa.String(200), nullable=False),
        sa.Column("core", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("rollup", JSON_TYPE, nullable=False),
        sa.Column("latency_hist", sa.LargeBinary(), nullable=False),
        sa.Column("score_hist", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(*keys, name=f"pk_{_TABLE}"),
    )
    op.create_index(f"ix_{_TABLE}_release_id_bucket_ms", _TABLE, ["release_id", "bucket_ms"])


def downgrade() -> None:
    op.drop_index(f"ix_{_TABLE}_release_id_bucket_ms", table_name=_TABLE)
    op.drop_table(_TABLE)
