"""A fast, column-friendly twin of `device_agent.protocol.telemetry.decode_batch`.

The wire contract's `decode_batch` builds a frozen record object per row, which is most of an
ingest worker's time. `decode_rows` validates the same document with inlined checks and keeps
rows as tuples. It accepts a batch only if every check of `decode_batch` passes; on the first
doubt it calls `decode_batch` itself, so every refusal (and its reason and detail) is exactly
the contract's. A property test checks both agree on generated and mutated documents.

Invariants:
- Pure: bytes in, rows out; raises only `TelemetryError` (from `decode_batch`).
- `decode_rows(b, d)` succeeds iff `decode_batch(b, device_id=d)` does, with the same values,
  or, for a `tinyfleet.summary/1` body, iff `decode_summaries` does (then only `summaries` is
  filled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from device_agent.protocol.summary import SummaryRecord, decode_summaries
from device_agent.protocol.telemetry import (
    EVENT_KINDS,
    MAX_BATCH_BYTES,
    SCHEMA,
    TelemetryBatch,
    TelemetryError,
    decode_batch,
)

__all__ = ["Decoded", "EventRow", "HealthRow", "InferenceRow", "decode_rows"]

# (core, model id, model version, ts ms, latency us, score, label, anomaly)
InferenceRow: TypeAlias = tuple[str, str, str, int, int, float, str | None, bool | None]
# (ts ms, agent memory bytes, uptime s, link errors, dropped records, cores online)
HealthRow: TypeAlias = tuple[int, int, int, int, int, int]
# (ts ms, kind, core, release id, code, reason)
EventRow: TypeAlias = tuple[int, str, str | None, str | None, int, str]

_ID_MAX = 128
_BIG = 2**53
_KINDS = frozenset(EVENT_KINDS)


@dataclass(frozen=True, slots=True)
class Decoded:
    device_id: str
    seq: int
    release: str | None
    inference: tuple[InferenceRow, ...] | list[InferenceRow]
    health: tuple[HealthRow, ...] | list[HealthRow]
    events: tuple[EventRow, ...] | list[EventRow]
    summaries: tuple[SummaryRecord, ...] = ()
    sampled: bool = False  # inference rows a summary already counts: stored, not rolled up

    @classmethod
    def from_batch(cls, batch: TelemetryBatch) -> Decoded:
        return cls(
            batch.device_id,
            batch.seq,
            batch.release,
            [
                (
                    r.core,
                    r.model_id,
                    r.model_version,
                    r.ts_ms,
                    r.latency_us,
                    r.score,
                    r.label,
                    r.anomaly,
                )
                for r in batch.inference
            ],
            [
                (
                    h.ts_ms,
                    h.agent_memory_bytes,
                    h.uptime_s,
                    h.link_errors,
                    h.dropped_records,
                    h.cores_online,
                )
                for h in batch.health
            ],
            [(e.ts_ms, e.kind, e.core, e.release_id, e.code, e.reason) for e in batch.events],
            sampled=batch.sampled,
        )


class _Doubt(Exception):
    """The fast path is not sure: let the contract's decoder decide."""


def _id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _ID_MAX


def _inference(rows: Any) -> list[InferenceRow]:
    if type(rows) is not list:
        raise _Doubt
    out: list[InferenceRow] = []
    append = out.append
    for row in rows:
        if type(row) is not list or len(row) != 8:
            raise _Doubt
        core, model, version, ts, latency, score, label, anomaly = row
        if not (
            type(core) is str
            and 0 < len(core) <= _ID_MAX
            and type(model) is str
            and 0 < len(model) <= _ID_MAX
            and type(version) is str
            and 0 < len(version) <= _ID_MAX
            and type(ts) is int
            and 0 <= ts <= _BIG
            and type(latency) is int
            and 0 <= latency <= 60_000_000
            and (type(score) is float or type(score) is int)
            and 0.0 <= score <= 1.0
            and (label is None or (type(label) is str and 0 < len(label) <= _ID_MAX))
            and (anomaly is None or type(anomaly) is bool)
        ):
            raise _Doubt
        append((core, model, version, ts, latency, float(score), label, anomaly))
    return out


def _health(rows: Any) -> list[HealthRow]:
    if type(rows) is not list:
        raise _Doubt
    out: list[HealthRow] = []
    for row in rows:
        if type(row) is not list or len(row) != 6:
            raise _Doubt
        for i, value in enumerate(row):
            if type(value) is not int or not 0 <= value <= (64 if i == 5 else _BIG):
                raise _Doubt
        out.append((row[0], row[1], row[2], row[3], row[4], row[5]))
    return out


def _events(rows: Any) -> list[EventRow]:
    if type(rows) is not list:
        raise _Doubt
    out: list[EventRow] = []
    for row in rows:
        if type(row) is not list or len(row) != 6:
            raise _Doubt
        ts, kind, core, release, code, reason = row
        if not (
            type(ts) is int
            and 0 <= ts <= _BIG
            and type(kind) is str
            and kind in _KINDS
            and (core is None or _id(core))
            and (release is None or _id(release))
            and type(code) is int
            and -(2**31) <= code <= 2**31
            and type(reason) is str
            and len(reason) <= 512
        ):
            raise _Doubt
        out.append((ts, kind, core, release, code, reason))
    return out


def decode_rows(body: bytes, *, device_id: str) -> Decoded:
    """Validate a D2C body that the hub says came from `device_id` (see the module docstring).

    Raises:
        TelemetryError: exactly when `decode_batch` would, with its reason and detail.
    """
    try:
        if len(body) > MAX_BATCH_BYTES:
            raise _Doubt
        document = json.loads(body)
        if (
            type(document) is not dict
            or document.get("schema") != SCHEMA
            or document.get("deviceId") != device_id
        ):
            raise _Doubt
        seq, release = document.get("seq"), document.get("release")
        if type(seq) is not int or not 0 <= seq <= _BIG or not (release is None or _id(release)):
            raise _Doubt
        sampled = document.get("sampled", False)
        if type(sampled) is not bool:
            raise _Doubt
        return Decoded(
            device_id,
            seq,
            release,
            _inference(document.get("inference", [])),
            _health(document.get("health", [])),
            _events(document.get("events", [])),
            sampled=sampled,
        )
    except (_Doubt, ValueError, TypeError, RecursionError):
        pass
    try:
        return Decoded.from_batch(decode_batch(body, device_id=device_id))
    except TelemetryError as exc:
        if exc.reason != "unknown-schema":
            raise
    summary = decode_summaries(body, device_id=device_id)
    return Decoded(device_id, summary.seq, summary.release, [], [], [], summary.summaries)
