"""Stored rollups: the `CohortRollup.to_dict()` document without its two histograms, which are
kept beside it as little-endian int64 [bin, count] pairs (sparse), one binary column each.

Why not the whole document as JSON: a gate reads hundreds of stored rollups (buckets times
partitions), and parsing a thousand-pair JSON list per histogram costs about a millisecond per
rollup; the binary pairs decode with one `np.frombuffer`, which keeps the gate over ten million
records well under a second on PostgreSQL too.

Invariants:
- `decode(*encode(r)) == r` for every rollup `r`, exactly.
- `decode` refuses (RollupError) another layout, bins out of range, negative counts, and
  histograms that do not add up to the rollup's inferences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.domain.rollups import LATENCY_BINS, LAYOUT, SCORE_BINS, CohortRollup, RollupError

__all__ = ["decode", "encode"]

_LE_INT64 = np.dtype("<i8")


def _pairs(counts: NDArray[np.int64]) -> bytes:
    bins = np.flatnonzero(counts)
    return np.column_stack((bins, counts[bins])).astype(_LE_INT64).tobytes()


def encode(rollup: CohortRollup) -> tuple[dict[str, Any], bytes, bytes]:
    document = rollup.to_dict()
    del document["latency_counts"], document["score_counts"]
    return document, _pairs(rollup.latency_counts), _pairs(rollup.score_counts)


def _dense(data: bytes, bins: int, name: str) -> NDArray[np.int64]:
    if len(data) % 16:
        raise RollupError(f"stored {name} is not [bin, count] int64 pairs")
    pairs = np.frombuffer(data, dtype=_LE_INT64).reshape(-1, 2)
    dense = np.zeros(bins, np.int64)
    if pairs.size:
        if pairs[:, 0].min() < 0 or pairs[:, 0].max() >= bins or pairs[:, 1].min() < 0:
            raise RollupError(f"stored {name} has a bin outside [0, {bins}) or a negative count")
        np.add.at(dense, pairs[:, 0], pairs[:, 1])
    return dense


def decode(document: dict[str, Any], latency: bytes, score: bytes) -> CohortRollup:
    """Raises RollupError for anything `encode` could not have written."""
    if document.get("layout") != LAYOUT:
        raise RollupError(f"rollup layout {document.get('layout')!r} is not {LAYOUT}")
    latency_counts = _dense(latency, LATENCY_BINS, "latency histogram")
    score_counts = _dense(score, SCORE_BINS, "score histogram")
    try:
        ints = {
            name: int(document[name])
            for name in (
                "inferences",
                "latency_sum_us",
                "score_sum_units",
                "anomalies",
                "anomaly_reported",
                "errors",
                "reverts",
                "crashes",
            )
        }
        sets = {
            name: frozenset(str(d) for d in document[name])
            for name in ("devices", "devices_with_error", "devices_reverted", "devices_crashed")
        }
        labels = tuple(sorted((str(k), int(v)) for k, v in document["labels"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RollupError(f"stored rollup is malformed: {exc}") from exc
    if (
        int(latency_counts.sum()) != ints["inferences"]
        or int(score_counts.sum()) != ints["inferences"]
    ):
        raise RollupError("stored rollup's histograms do not add up to its inferences")
    latency_counts.setflags(write=False)
    score_counts.setflags(write=False)
    return CohortRollup(
        inferences=ints["inferences"],
        latency_sum_us=ints["latency_sum_us"],
        latency_counts=latency_counts,
        score_sum_units=ints["score_sum_units"],
        score_counts=score_counts,
        anomalies=ints["anomalies"],
        anomaly_reported=ints["anomaly_reported"],
        labels=labels,
        errors=ints["errors"],
        reverts=ints["reverts"],
        crashes=ints["crashes"],
        **sets,
    )
