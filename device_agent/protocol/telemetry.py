"""The telemetry schema: inference results, device health and events, batched into D2C messages.

One D2C message is one batch, compact JSON, with rows as arrays in a fixed column order (a fleet
sends millions of rows; keys per row would double the bytes):

    {"schema": "tinyfleet.telemetry/1", "deviceId": "dev-1", "seq": 42, "release": "r7",
     "inference": [[core, modelId, modelVersion, tsMs, latencyUs, score, label, anomaly], ...],
     "health":    [[tsMs, agentMemoryBytes, uptimeS, linkErrors, droppedRecords, coresOnline], ...],
     "events":    [[tsMs, kind, core, releaseId, code, reason], ...]}

`seq` increases by one per batch and device; with the device id it makes the message id
(`$.mid`), so the service deduplicates redelivered batches.

Invariants:
- `decode_batch` raises only `TelemetryError`, with a `reason` of: malformed, oversized,
  unknown-schema, wrong-device, bad-record.
- An encoded batch never exceeds `MAX_BATCH_BYTES` (below the hub's 256 KB message limit, leaving
  room for the property bag).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "EVENT_KINDS",
    "MAX_BATCH_BYTES",
    "SCHEMA",
    "BatchBuilder",
    "EventRecord",
    "HealthRecord",
    "InferenceRecord",
    "TelemetryBatch",
    "TelemetryError",
    "decode_batch",
    "encode_batch",
    "message_id",
    "message_properties",
    "open_envelope",
]

SCHEMA = "tinyfleet.telemetry/1"
CONTENT_TYPE = "application/json"
MAX_BATCH_BYTES = 250_000
EVENT_KINDS = ("install", "activate", "confirm", "revert", "selftest", "crash", "reject")
_ID_MAX = 128


class TelemetryError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class InferenceRecord:
    core: str
    model_id: str
    model_version: str
    ts_ms: int
    latency_us: int
    score: float  # the winning class's confidence, or the anomaly score, in [0, 1]
    label: str | None = None
    anomaly: bool | None = None  # an anomaly detector's own decision; None: not a detector

    def row(self) -> list[Any]:
        return [
            self.core,
            self.model_id,
            self.model_version,
            self.ts_ms,
            self.latency_us,
            round(self.score, 5),
            self.label,
            self.anomaly,
        ]


@dataclass(frozen=True)
class HealthRecord:
    ts_ms: int
    agent_memory_bytes: int
    uptime_s: int
    link_errors: int
    dropped_records: int
    cores_online: int

    def row(self) -> list[Any]:
        return [
            self.ts_ms,
            self.agent_memory_bytes,
            self.uptime_s,
            self.link_errors,
            self.dropped_records,
            self.cores_online,
        ]


@dataclass(frozen=True)
class EventRecord:
    """One event. A `crash` is one lost core: `code` is its exit status (negative: the signal;
    256: unknown) and `reason` says how it ended and which model it ran."""

    ts_ms: int
    kind: str
    core: str | None
    release_id: str | None
    code: int
    reason: str = ""

    def row(self) -> list[Any]:
        return [self.ts_ms, self.kind, self.core, self.release_id, self.code, self.reason]


@dataclass(frozen=True)
class TelemetryBatch:
    device_id: str
    seq: int
    release: str | None
    inference: tuple[InferenceRecord, ...] = ()
    health: tuple[HealthRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    # The inference rows are a sample of inferences that summaries already count: the service
    # stores them but leaves them out of the rollups the gates read. On the wire only when true.
    sampled: bool = False


def message_id(device_id: str, seq: int) -> str:
    return f"{device_id}:{seq}"


def message_properties(batch: TelemetryBatch) -> dict[str, str]:
    """System and application properties of the D2C message carrying `batch`."""
    return {
        "$.mid": message_id(batch.device_id, batch.seq),
        "$.ct": CONTENT_TYPE,
        "$.ce": "utf-8",
        "tf-schema": SCHEMA,
    }


def _document(batch: TelemetryBatch) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "deviceId": batch.device_id,
        "seq": batch.seq,
        "release": batch.release,
        "inference": [r.row() for r in batch.inference],
        "health": [r.row() for r in batch.health],
        "events": [r.row() for r in batch.events],
        **({"sampled": True} if batch.sampled else {}),
    }


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def encode_batch(batch: TelemetryBatch) -> bytes:
    data = _dumps(_document(batch))
    if len(data) > MAX_BATCH_BYTES:
        raise TelemetryError("oversized", f"batch of {len(data)} bytes")
    return data


class BatchBuilder:
    """Fills one batch up to the size limit; `add` says False when the record does not fit."""

    _OVERHEAD = 160  # the document's keys, ids and brackets, generously

    def __init__(
        self, device_id: str, seq: int, release: str | None, limit: int = MAX_BATCH_BYTES
    ) -> None:
        self.device_id, self.seq, self.release = device_id, seq, release
        self._limit = limit - self._OVERHEAD - len(device_id) - len(release or "")
        self._size = 0
        self._rows: dict[str, list[Any]] = {"inference": [], "health": [], "events": []}

    def add(self, record: InferenceRecord | HealthRecord | EventRecord) -> bool:
        kind = {InferenceRecord: "inference", HealthRecord: "health", EventRecord: "events"}[
            type(record)
        ]
        size = len(_dumps(record.row())) + 1
        if self._size + size > self._limit:
            return False
        self._rows[kind].append(record)
        self._size += size
        return True

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def build(self) -> TelemetryBatch:
        return TelemetryBatch(
            self.device_id,
            self.seq,
            self.release,
            tuple(self._rows["inference"]),
            tuple(self._rows["health"]),
            tuple(self._rows["events"]),
        )


# -- decoding (the service side) ---------------------------------------------------------------


def _int(value: object, what: str, low: int = 0, high: int = 2**53) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TelemetryError("bad-record", f"{what} must be an integer in [{low}, {high}]")
    return value


def _text(value: object, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX:
        raise TelemetryError("bad-record", f"{what} must be a short string")
    return value


def _rows(document: dict[str, Any], key: str, width: int) -> list[list[Any]]:
    rows = document.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == width for r in rows):
        raise TelemetryError("bad-record", f"{key} must be a list of {width}-column rows")
    return rows


def _inference(row: list[Any]) -> InferenceRecord:
    core, model_id, version, ts, latency, score, label, anomaly = row
    if (
        not isinstance(score, int | float)
        or isinstance(score, bool)
        or not (math.isfinite(score) and 0.0 <= score <= 1.0)
    ):
        raise TelemetryError("bad-record", "score must be a number in [0, 1]")
    if anomaly is not None and not isinstance(anomaly, bool):
        raise TelemetryError("bad-record", "anomaly must be true, false or null")
    return InferenceRecord(
        core=str(_text(core, "core")),
        model_id=str(_text(model_id, "modelId")),
        model_version=str(_text(version, "modelVersion")),
        ts_ms=_int(ts, "tsMs"),
        latency_us=_int(latency, "latencyUs", 0, 60_000_000),
        score=float(score),
        label=_text(label, "label", optional=True),
        anomaly=anomaly,
    )


def _health(row: list[Any]) -> HealthRecord:
    ts, memory, uptime, link, dropped, cores = row
    return HealthRecord(
        _int(ts, "tsMs"),
        _int(memory, "agentMemoryBytes"),
        _int(uptime, "uptimeS"),
        _int(link, "linkErrors"),
        _int(dropped, "droppedRecords"),
        _int(cores, "coresOnline", 0, 64),
    )


def _event(row: list[Any]) -> EventRecord:
    ts, kind, core, release, code, reason = row
    if kind not in EVENT_KINDS:
        raise TelemetryError("bad-record", f"event kind {kind!r} is not one of {EVENT_KINDS}")
    if not isinstance(reason, str) or len(reason) > 512:
        raise TelemetryError("bad-record", "event reason must be a string")
    return EventRecord(
        _int(ts, "tsMs"),
        kind,
        _text(core, "core", optional=True),
        _text(release, "releaseId", optional=True),
        _int(code, "code", -(2**31), 2**31),
        reason,
    )


def open_envelope(
    body: bytes,
    *,
    device_id: str,
    schema: str,
    error: type[TelemetryError] = TelemetryError,
    what: str = "a batch",
) -> dict[str, Any]:
    """The checks every D2C telemetry body passes first: size, UTF-8 JSON object, its schema,
    and the device the hub authenticated; raises `error` with the matching reason."""
    if len(body) > MAX_BATCH_BYTES:
        raise error("oversized", f"{len(body)} bytes")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error("malformed", f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise error("malformed", f"{what} is a JSON object")
    if document.get("schema") != schema:
        raise error("unknown-schema", f"schema {document.get('schema')!r}")
    if document.get("deviceId") != device_id:
        raise error("wrong-device", f"batch claims {document.get('deviceId')!r}")
    return document


def decode_batch(body: bytes, *, device_id: str) -> TelemetryBatch:
    """Validate a D2C body that the hub says came from `device_id`."""
    document = open_envelope(body, device_id=device_id, schema=SCHEMA)
    return TelemetryBatch(
        device_id=device_id,
        seq=_int(document.get("seq"), "seq"),
        release=_text(document.get("release"), "release", optional=True),
        inference=tuple(_inference(r) for r in _rows(document, "inference", 8)),
        health=tuple(_health(r) for r in _rows(document, "health", 6)),
        events=tuple(_event(r) for r in _rows(document, "events", 6)),
        sampled=_flag(document.get("sampled", False), "sampled"),
    )


def _flag(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise TelemetryError("bad-record", f"{what} must be true or false")
    return value
