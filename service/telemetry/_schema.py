"""Telemetry tables, on the storage's `METADATA` (migration 0003 creates them).

Times of telemetry rows are integer milliseconds since the epoch (`*_ms`), not `UtcDateTime`:
they are written by the million through COPY/executemany, and integers are the cheapest to
encode and to compare. `enqueued_ms` is the hub's clock (trusted); `ts_ms` is the device's.

Rollups are keyed by (group, release, core, model id, model version, bucket, partition). The
partition is part of the key so that one worker owns every rollup row it updates (partitions
are owned by one worker at a time), and a read merges partitions, which is exact. Rows with
core = model id = model version = "" carry the devices that sent anything and their events.
Group "" is the whole fleet.

Device rollups (migration 0007) are keyed the same way with the device in place of the group:
the gate reads a stage's own devices out of them, whatever groups they belonged to at ingest.
Their buckets are 10 s (`DEVICE_BUCKET_MS`), so a window that starts exactly at a stage's start
(leaving out the bucket it starts in) loses at most 10 s.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.storage._schema import BIGID, JSON_TYPE, METADATA, UtcDateTime

__all__ = [
    "dead_letters",
    "device_rollups",
    "gate_verdicts",
    "inference",
    "partitions",
    "rollups",
    "seen",
]

inference = sa.Table(
    "telemetry_inference",
    METADATA,
    sa.Column("device_id", sa.String(200), nullable=False),
    sa.Column("release_id", sa.String(200), nullable=False),  # "" when the device sent none
    sa.Column("core", sa.String(128), nullable=False),
    sa.Column("model_id", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("ts_ms", sa.BigInteger(), nullable=False),
    sa.Column("latency_us", sa.Integer(), nullable=False),
    sa.Column("score", sa.Float(), nullable=False),
    sa.Column("label", sa.String(128), nullable=True),
    sa.Column("anomaly", sa.Boolean(), nullable=True),
    sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    sa.Index(None, "device_id", "ts_ms"),
    sa.Index(None, "enqueued_ms"),
)

health = sa.Table(
    "telemetry_health",
    METADATA,
    sa.Column("device_id", sa.String(200), nullable=False),
    sa.Column("ts_ms", sa.BigInteger(), nullable=False),
    sa.Column("agent_memory_bytes", sa.BigInteger(), nullable=False),
    sa.Column("uptime_s", sa.BigInteger(), nullable=False),
    sa.Column("link_errors", sa.BigInteger(), nullable=False),
    sa.Column("dropped_records", sa.BigInteger(), nullable=False),
    sa.Column("cores_online", sa.Integer(), nullable=False),
    sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    sa.Index(None, "device_id", "ts_ms"),
    sa.Index(None, "enqueued_ms"),
)

events = sa.Table(
    "telemetry_events",
    METADATA,
    sa.Column("device_id", sa.String(200), nullable=False),
    sa.Column("release_id", sa.String(200), nullable=False),  # the batch's release
    sa.Column("ts_ms", sa.BigInteger(), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("core", sa.String(128), nullable=True),
    sa.Column("event_release_id", sa.String(200), nullable=True),
    sa.Column("code", sa.BigInteger(), nullable=False),
    sa.Column("reason", sa.String(512), nullable=False),
    sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    sa.Index(None, "device_id", "ts_ms"),
    sa.Index(None, "enqueued_ms"),
)

seen = sa.Table(
    "telemetry_seen",
    METADATA,
    sa.Column("message_id", sa.String(300), primary_key=True),
    sa.Column("enqueued_ms", sa.BigInteger(), nullable=False),
    sa.Index(None, "enqueued_ms"),
)

rollups = sa.Table(
    "telemetry_rollups",
    METADATA,
    sa.Column("group_id", sa.String(200), primary_key=True),
    sa.Column("release_id", sa.String(200), primary_key=True),
    sa.Column("core", sa.String(128), primary_key=True),
    sa.Column("model_id", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(128), primary_key=True),
    sa.Column("bucket_ms", sa.BigInteger(), primary_key=True),
    sa.Column("partition", sa.String(64), primary_key=True),
    sa.Column("rollup", JSON_TYPE, nullable=False),  # to_dict() without the histograms
    sa.Column("latency_hist", sa.LargeBinary(), nullable=False),  # see _codec.py
    sa.Column("score_hist", sa.LargeBinary(), nullable=False),
    sa.Index(None, "group_id", "release_id", "bucket_ms"),
    sa.Index(None, "bucket_ms"),
)

device_rollups = sa.Table(
    "telemetry_device_rollups",
    METADATA,
    sa.Column("device_id", sa.String(200), primary_key=True),
    sa.Column("release_id", sa.String(200), primary_key=True),
    sa.Column("core", sa.String(128), primary_key=True),
    sa.Column("model_id", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(128), primary_key=True),
    sa.Column("bucket_ms", sa.BigInteger(), primary_key=True),
    sa.Column("partition", sa.String(64), primary_key=True),
    sa.Column("rollup", JSON_TYPE, nullable=False),
    sa.Column("latency_hist", sa.LargeBinary(), nullable=False),
    sa.Column("score_hist", sa.LargeBinary(), nullable=False),
    sa.Index(None, "release_id", "bucket_ms"),
)

dead_letters = sa.Table(
    "telemetry_dead_letters",
    METADATA,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("partition", sa.String(64), nullable=False),
    sa.Column("sequence", sa.BigInteger(), nullable=False),
    sa.Column("device_id", sa.String(200), nullable=True),
    sa.Column("message_id", sa.String(300), nullable=True),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(1000), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),  # the first KiB, for diagnosis
    sa.Index(None, "reason"),
)

partitions = sa.Table(
    "telemetry_partitions",
    METADATA,
    sa.Column("partition", sa.String(64), primary_key=True),
    sa.Column("committed_seq", sa.BigInteger(), nullable=False),  # last sequence committed
    sa.Column("last_seq", sa.BigInteger(), nullable=True),  # newest the source knew of
    sa.Column("messages", sa.BigInteger(), nullable=False),
    sa.Column("records", sa.BigInteger(), nullable=False),
    sa.Column("duplicates", sa.BigInteger(), nullable=False),
    sa.Column("dead_letters", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

gate_verdicts = sa.Table(
    "gate_verdicts",
    METADATA,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.String(200), nullable=False),
    sa.Column("stage", sa.Integer(), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("numbers", JSON_TYPE, nullable=False),
    sa.Column("metrics", JSON_TYPE, nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Index(None, "rollout_id", "id"),
)

TABLES = (
    inference,
    health,
    events,
    seen,
    rollups,
    device_rollups,
    dead_letters,
    partitions,
    gate_verdicts,
)
