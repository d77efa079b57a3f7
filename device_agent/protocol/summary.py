"""Per-interval inference summaries: what a device sends instead of (or beside) raw inference rows.

One summary covers one (core, modelId, modelVersion, interval) and carries exactly what the
service's per-device rollup (`tinyfleet.rollup/1`) needs, so a gate fed summaries sees the same
numbers as one fed the equivalent raw rows:

    {"schema": "tinyfleet.summary/1", "deviceId": "dev-1", "seq": 43, "release": "r7",
     "summaries": [[core, modelId, modelVersion, startMs, intervalMs, count, latencySumUs,
                    latencyBins, scoreSumUnits, scoreBins, anomalies, anomalyReported, labels],
                   ...]}

- latency sketch: log buckets with integer microsecond edges 0, then round(2^(k/32)) for
  k = 0..828 without repeats (exact below 46 us, each bucket at most about 2.2 % wide above, up to
  60 s). `latencyBins` is a sparse list of [bin, count], bins ascending. A quantile read from the
  buckets is within one bucket, i.e. 2.2 % relative, of the exact quantile. Merging is adding
  counts: exact, commutative, associative; at most 829 buckets whatever the count.
- score: each score quantised to five decimals (`round(score * 100000)`, half to even), summed in
  those units (`scoreSumUnits`, exact mean) and bucketed by 0.001 (`scoreBins`, sparse, as above).
- anomalies of anomalyReported rows that carried a detector flag; labels: sparse [label, count]
  sorted by label.
- Crashes, reverts and errors are not counted here: they flow as events in the telemetry batch, as
  before, so they are never counted twice.

The key (deviceId, core, modelId, modelVersion, startMs) names a summary; the service keeps the
first one it sees for a key, so a redelivered summary counts once.

Invariants:
- Pure: standard library only, no I/O, no clock reads (the caller passes interval starts).
- `decode_summaries` raises only `SummaryError`, with a `reason` of: malformed, oversized,
  unknown-schema, wrong-device, bad-summary.
- A decoded summary's buckets add up to its count, and its sums fit its buckets' ranges.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from dataclasses import dataclass, field

from device_agent.protocol.telemetry import (
    CONTENT_TYPE,
    MAX_BATCH_BYTES,
    InferenceRecord,
    TelemetryError,
    message_id,
    open_envelope,
)

__all__ = [
    "LATENCY_EDGES_US",
    "MAX_LATENCY_US",
    "SCORE_BINS",
    "SCORE_SCALE",
    "SUMMARY_SCHEMA",
    "SummaryAccumulator",
    "SummaryBatch",
    "SummaryError",
    "SummaryRecord",
    "decode_summaries",
    "encode_summaries",
    "latency_bin",
    "latency_quantile_us",
    "summary_properties",
]

SUMMARY_SCHEMA = "tinyfleet.summary/1"
MAX_LATENCY_US = 60_000_000
SCORE_SCALE = 100_000
SCORE_BINS = 1000
LATENCY_EDGES_US: tuple[int, ...] = (0, *sorted({round(2.0 ** (k / 32.0)) for k in range(829)}))
LATENCY_BINS = len(LATENCY_EDGES_US) - 1
_ID_MAX = 128
_MAX_INTERVAL_MS = 86_400_000
_MAX_LABELS = 64


class SummaryError(TelemetryError):
    """A summary message the service must refuse; `reason` says which rule it broke."""


def latency_bin(latency_us: int) -> int:
    return min(bisect_right(LATENCY_EDGES_US, latency_us) - 1, LATENCY_BINS - 1)


def latency_quantile_us(bins: tuple[tuple[int, int], ...], q: float) -> float:
    """The lower edge of the bucket holding the q-quantile: within one bucket of the exact value."""
    total = sum(count for _, count in bins)
    if not total:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in bins:
        seen += count
        if seen >= rank:
            return float(LATENCY_EDGES_US[index])
    return float(LATENCY_EDGES_US[bins[-1][0]])


def _add_sparse(
    a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    merged: dict[int, int] = dict(a)
    for index, count in b:
        merged[index] = merged.get(index, 0) + count
    return tuple(sorted(merged.items()))


@dataclass(frozen=True)
class SummaryRecord:
    core: str
    model_id: str
    model_version: str
    start_ms: int
    interval_ms: int
    count: int
    latency_sum_us: int
    latency_bins: tuple[tuple[int, int], ...]
    score_sum_units: int
    score_bins: tuple[tuple[int, int], ...]
    anomalies: int = 0
    anomaly_reported: int = 0
    labels: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.core, self.model_id, self.model_version, self.start_ms)

    def merge(self, other: SummaryRecord) -> SummaryRecord:
        """The summary of both records' rows (same core and model; the interval spans both)."""
        if (self.core, self.model_id, self.model_version) != (
            other.core,
            other.model_id,
            other.model_version,
        ):
            raise SummaryError("bad-summary", "only summaries of one core and model merge")
        start = min(self.start_ms, other.start_ms)
        end = max(self.start_ms + self.interval_ms, other.start_ms + other.interval_ms)
        labels = dict(self.labels)
        for name, count in other.labels:
            labels[name] = labels.get(name, 0) + count
        return SummaryRecord(
            self.core,
            self.model_id,
            self.model_version,
            start,
            end - start,
            self.count + other.count,
            self.latency_sum_us + other.latency_sum_us,
            _add_sparse(self.latency_bins, other.latency_bins),
            self.score_sum_units + other.score_sum_units,
            _add_sparse(self.score_bins, other.score_bins),
            self.anomalies + other.anomalies,
            self.anomaly_reported + other.anomaly_reported,
            tuple(sorted(labels.items())),
        )

    def latency_quantile_us(self, q: float) -> float:
        return latency_quantile_us(self.latency_bins, q)

    def row(self) -> list[object]:
        return [
            self.core,
            self.model_id,
            self.model_version,
            self.start_ms,
            self.interval_ms,
            self.count,
            self.latency_sum_us,
            [list(pair) for pair in self.latency_bins],
            self.score_sum_units,
            [list(pair) for pair in self.score_bins],
            self.anomalies,
            self.anomaly_reported,
            [list(pair) for pair in self.labels],
        ]


@dataclass
class SummaryAccumulator:
    """Adds one interval's inference records of one core and model; bounded by the bucket count."""

    core: str
    model_id: str
    model_version: str
    start_ms: int
    interval_ms: int
    count: int = 0
    latency_sum_us: int = 0
    score_sum_units: int = 0
    anomalies: int = 0
    anomaly_reported: int = 0
    latency: dict[int, int] = field(default_factory=dict)
    score: dict[int, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, record: InferenceRecord) -> None:
        if not 0 <= record.latency_us <= MAX_LATENCY_US:
            raise SummaryError("bad-summary", f"latency must be in [0, {MAX_LATENCY_US}] us")
        if not (math.isfinite(record.score) and 0.0 <= record.score <= 1.0):
            raise SummaryError("bad-summary", "score must be a number in [0, 1]")
        units = round(record.score * SCORE_SCALE)
        self.count += 1
        self.latency_sum_us += record.latency_us
        self.score_sum_units += units
        low = latency_bin(record.latency_us)
        self.latency[low] = self.latency.get(low, 0) + 1
        bucket = min(units // (SCORE_SCALE // SCORE_BINS), SCORE_BINS - 1)
        self.score[bucket] = self.score.get(bucket, 0) + 1
        if record.anomaly is not None:
            self.anomaly_reported += 1
            self.anomalies += int(record.anomaly)
        if record.label is not None:
            if record.label not in self.labels and len(self.labels) >= _MAX_LABELS:
                raise SummaryError("bad-summary", f"more than {_MAX_LABELS} labels")
            self.labels[record.label] = self.labels.get(record.label, 0) + 1

    def build(self) -> SummaryRecord:
        return SummaryRecord(
            self.core,
            self.model_id,
            self.model_version,
            self.start_ms,
            self.interval_ms,
            self.count,
            self.latency_sum_us,
            tuple(sorted(self.latency.items())),
            self.score_sum_units,
            tuple(sorted(self.score.items())),
            self.anomalies,
            self.anomaly_reported,
            tuple(sorted(self.labels.items())),
        )


@dataclass(frozen=True)
class SummaryBatch:
    device_id: str
    seq: int
    release: str | None
    summaries: tuple[SummaryRecord, ...] = ()


def encode_summaries(batch: SummaryBatch) -> bytes:
    document = {
        "schema": SUMMARY_SCHEMA,
        "deviceId": batch.device_id,
        "seq": batch.seq,
        "release": batch.release,
        "summaries": [s.row() for s in batch.summaries],
    }
    data = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > MAX_BATCH_BYTES:
        raise SummaryError("oversized", f"summary batch of {len(data)} bytes")
    return data


def summary_properties(batch: SummaryBatch) -> dict[str, str]:
    """System and application properties of the D2C message carrying `batch` (same id space as
    telemetry batches: one sequence per device)."""
    return {
        "$.mid": message_id(batch.device_id, batch.seq),
        "$.ct": CONTENT_TYPE,
        "$.ce": "utf-8",
        "tf-schema": SUMMARY_SCHEMA,
    }


# -- decoding (the service side) ---------------------------------------------------------------


def _int(value: object, what: str, low: int = 0, high: int = 2**53) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SummaryError("bad-summary", f"{what} must be an integer in [{low}, {high}]")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX:
        raise SummaryError("bad-summary", f"{what} must be a short string")
    return value


def _sparse(value: object, what: str, bins: int) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or len(value) > bins:
        raise SummaryError("bad-summary", f"{what} must be a list of at most {bins} pairs")
    pairs: list[tuple[int, int]] = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise SummaryError("bad-summary", f"{what} entries must be [bin, count]")
        index = _int(pair[0], f"{what} bin", 0, bins - 1)
        if pairs and index <= pairs[-1][0]:
            raise SummaryError("bad-summary", f"{what} bins must be strictly ascending")
        pairs.append((index, _int(pair[1], f"{what} count", 1)))
    return tuple(pairs)


def _labels(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or len(value) > _MAX_LABELS:
        raise SummaryError("bad-summary", f"labels must be a list of at most {_MAX_LABELS} pairs")
    pairs: list[tuple[str, int]] = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise SummaryError("bad-summary", "labels entries must be [label, count]")
        name = _text(pair[0], "label")
        if pairs and name <= pairs[-1][0]:
            raise SummaryError("bad-summary", "labels must be sorted and distinct")
        pairs.append((name, _int(pair[1], "label count", 1)))
    return tuple(pairs)


def _summary(row: object) -> SummaryRecord:
    if not isinstance(row, list) or len(row) != 13:
        raise SummaryError("bad-summary", "a summary is a 13-column row")
    record = SummaryRecord(
        core=_text(row[0], "core"),
        model_id=_text(row[1], "modelId"),
        model_version=_text(row[2], "modelVersion"),
        start_ms=_int(row[3], "startMs"),
        interval_ms=_int(row[4], "intervalMs", 1, _MAX_INTERVAL_MS),
        count=_int(row[5], "count", 1),
        latency_sum_us=_int(row[6], "latencySumUs"),
        latency_bins=_sparse(row[7], "latencyBins", LATENCY_BINS),
        score_sum_units=_int(row[8], "scoreSumUnits"),
        score_bins=_sparse(row[9], "scoreBins", SCORE_BINS),
        anomalies=_int(row[10], "anomalies"),
        anomaly_reported=_int(row[11], "anomalyReported"),
        labels=_labels(row[12]),
    )
    _check_consistent(record)
    return record


def _check_consistent(s: SummaryRecord) -> None:
    if sum(c for _, c in s.latency_bins) != s.count or sum(c for _, c in s.score_bins) != s.count:
        raise SummaryError("bad-summary", "latency and score buckets must add up to count")
    low = sum(LATENCY_EDGES_US[i] * c for i, c in s.latency_bins)
    high = sum(
        (LATENCY_EDGES_US[i + 1] - 1 if i + 1 < LATENCY_BINS else MAX_LATENCY_US) * c
        for i, c in s.latency_bins
    )
    if not low <= s.latency_sum_us <= high:
        raise SummaryError("bad-summary", "latencySumUs does not fit the latency buckets")
    step = SCORE_SCALE // SCORE_BINS
    score_low = sum(i * step * c for i, c in s.score_bins)
    score_high = sum(
        ((i + 1) * step - 1 if i + 1 < SCORE_BINS else SCORE_SCALE) * c for i, c in s.score_bins
    )
    if not score_low <= s.score_sum_units <= score_high:
        raise SummaryError("bad-summary", "scoreSumUnits does not fit the score buckets")
    if not s.anomalies <= s.anomaly_reported <= s.count:
        raise SummaryError("bad-summary", "anomalies <= anomalyReported <= count must hold")
    if sum(c for _, c in s.labels) > s.count:
        raise SummaryError("bad-summary", "label counts exceed count")


def decode_summaries(body: bytes, *, device_id: str) -> SummaryBatch:
    """Validate a summary D2C body that the hub says came from `device_id`."""
    document = open_envelope(
        body, device_id=device_id, schema=SUMMARY_SCHEMA, error=SummaryError,
        what="a summary batch",
    )  # fmt: skip
    rows = document.get("summaries")
    if not isinstance(rows, list):
        raise SummaryError("bad-summary", "summaries must be a list of rows")
    release = document.get("release")
    if release is not None:
        release = _text(release, "release")
    summaries = tuple(_summary(row) for row in rows)
    if len({s.key for s in summaries}) != len(summaries):
        raise SummaryError("bad-summary", "two summaries share one (core, model, version, start)")
    return SummaryBatch(device_id, _int(document.get("seq"), "seq"), release, summaries)
