"""Telemetry ingest leases: which worker owns each feed partition, until when, under which epoch;
and the workers' heartbeats (a worker that holds nothing yet still counts toward a fair share).

See `service/telemetry/_leases.py` for how workers claim, renew, rebalance and fence.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_ingest_leases",
        sa.Column("partition", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("partition", name="pk_telemetry_ingest_leases"),
    )
    op.create_table(
        "telemetry_ingest_workers",
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_telemetry_ingest_workers"),
    )


def downgrade() -> None:
    op.drop_table("telemetry_ingest_workers")
    op.drop_table("telemetry_ingest_leases")
