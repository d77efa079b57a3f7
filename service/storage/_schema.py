"""The SQL schema as SQLAlchemy Core tables (the migrations in `migrations/` create it).

Why Core and not the ORM: the storage layer's work is set-based (bulk upserts of a million
devices, conditional bulk state moves of device jobs, keyset pages) and its results are frozen
domain records, not tracked objects. Core statements map one-to-one onto the SQL we want to
run, with no identity map, lazy loading or flush ordering between the engine and the database,
and they stay fast at bulk sizes where ORM unit-of-work bookkeeping costs more than the SQL.

Column conventions: datetimes are `UtcDateTime` (timezone-aware in Python, UTC in the database);
JSON is `JSON` on SQLite and `JSONB` on PostgreSQL; string keys are bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

__all__ = ["JSON_TYPE", "METADATA", "UtcDateTime"]


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive input is refused.

    SQLite has no time zone type, so values are stored there as naive UTC, which also keeps
    text comparison in index order.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: storage needs timezone-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSON_TYPE: Any = sa.JSON().with_variant(JSONB(), "postgresql")
BIGID: Any = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PK = rowid on SQLite

METADATA = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

devices = sa.Table(
    "devices",
    METADATA,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("hardware_id", sa.String(200), nullable=False),
    sa.Column("profile", sa.String(200), nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("tags", JSON_TYPE, nullable=False),
    sa.Column("reported", JSON_TYPE, nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index(None, "hardware_id", "id"),
    sa.Index(None, "last_seen"),
)

device_groups = sa.Table(
    "device_groups",
    METADATA,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("selector", sa.Text(), nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False),
    sa.Column("production", sa.Boolean(), nullable=False),
    sa.CheckConstraint("kind IN ('tag', 'query')", name="kind"),
)

releases = sa.Table(
    "releases",
    METADATA,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("counter", sa.Integer(), nullable=False),
    sa.Column("hardware_ids", JSON_TYPE, nullable=False),
    sa.Column("manifest", JSON_TYPE, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

rollouts = sa.Table(
    "rollouts",
    METADATA,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("group_id", sa.String(200), sa.ForeignKey("device_groups.id"), nullable=False),
    sa.Column("release_id", sa.String(200), sa.ForeignKey("releases.id"), nullable=False),
    sa.Column("previous_release_id", sa.String(200), sa.ForeignKey("releases.id"), nullable=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("spec", JSON_TYPE, nullable=False),
    sa.Column("state_data", JSON_TYPE, nullable=False),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Index(None, "state"),
    sa.Index(None, "group_id"),
)

rollout_stages = sa.Table(
    "rollout_stages",
    METADATA,
    sa.Column(
        "rollout_id",
        sa.String(200),
        sa.ForeignKey("rollouts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("idx", sa.Integer(), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("planned", sa.Integer(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("data", JSON_TYPE, nullable=False),
)

device_jobs = sa.Table(
    "device_jobs",
    METADATA,
    # No foreign keys (0002, 0004): `jobs.add` checks the rollout, devices and release, and
    # `jobs.plan` the rollout (its caller read the devices in the same unit); a per-row check
    # costs more than an index when planning a million jobs (≈2.8 s on PostgreSQL for the
    # rollout alone). Rollouts, devices and releases are never deleted.
    sa.Column("rollout_id", sa.String(200), primary_key=True),
    sa.Column("device_id", sa.String(200), primary_key=True),
    # A device's forward job and its rollback job in one rollout differ by release (0002).
    sa.Column("release_id", sa.String(200), primary_key=True),
    sa.Column("stage", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
    sa.Column("offered_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # The planner's stage hash minus 2**63 (signed 64-bit): the offer order within a stage.
    sa.Column("order_key", sa.BigInteger(), nullable=False, server_default="0"),
    # The engine's hot queries: a rollout's jobs in one state (paged by device), the next
    # offer candidates (state, stage, order), jobs due for a retry or timeout, and a device's
    # jobs across rollouts. Jobs without a retry time or deadline (every job a rollout is
    # planned with) are left out of the `next_attempt_at` index (0004): `due` only looks
    # for times, and planning then writes nothing to it.
    sa.Index(None, "rollout_id", "state", "device_id", "release_id"),
    sa.Index(None, "rollout_id", "release_id", "state", "stage", "order_key"),
    sa.Index(
        None,
        "next_attempt_at",
        sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    ),
    sa.Index(None, "device_id"),
)

outbox = sa.Table(
    "outbox",
    METADATA,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", JSON_TYPE, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("dispatched_at", UtcDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("parked_at", UtcDateTime(), nullable=True),
    sa.Index(None, "dispatched_at", "id"),
)

audit_log = sa.Table(
    "audit_log",
    METADATA,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("details", JSON_TYPE, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
)

api_tokens = sa.Table(
    "api_tokens",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'operator', 'release-signer', 'admin')", name="role"),
)

engine_lease = sa.Table(
    "engine_lease",
    METADATA,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)
