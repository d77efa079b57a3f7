"""Device summaries (`tinyfleet.summary/1`) turned into the per-device rollups the gates read.

Invariants:
- Pure: a decoded summary in, a `CohortRollup` out; no I/O, no clock.
- The rollup of a summary equals `CohortRollup.from_records` of the raw rows it summarises, exactly
  (the summary's buckets are the rollup layout's buckets), so gate verdicts are the same.
"""

from __future__ import annotations

import numpy as np

from device_agent.protocol.summary import LATENCY_EDGES_US as WIRE_LATENCY_EDGES_US
from device_agent.protocol.summary import SCORE_BINS as WIRE_SCORE_BINS
from device_agent.protocol.summary import SummaryRecord
from service.domain.rollups import LATENCY_EDGES_US, SCORE_EDGES, CohortRollup, RollupError

__all__ = ["rollup_from_summary"]

if tuple(int(e) for e in LATENCY_EDGES_US) != WIRE_LATENCY_EDGES_US or (
    SCORE_EDGES.shape[0] - 1 != WIRE_SCORE_BINS
):
    raise RollupError("the summary wire buckets and the rollup layout's buckets differ")


def _dense(pairs: tuple[tuple[int, int], ...], bins: int) -> np.ndarray:
    dense = np.zeros(bins, np.int64)
    for index, count in pairs:
        dense[index] += count
    dense.setflags(write=False)
    return dense


def rollup_from_summary(device_id: str, summary: SummaryRecord) -> CohortRollup:
    empty = CohortRollup.empty()
    return CohortRollup(
        inferences=summary.count,
        latency_sum_us=summary.latency_sum_us,
        latency_counts=_dense(summary.latency_bins, empty.latency_counts.shape[0]),
        score_sum_units=summary.score_sum_units,
        score_counts=_dense(summary.score_bins, empty.score_counts.shape[0]),
        anomalies=summary.anomalies,
        anomaly_reported=summary.anomaly_reported,
        labels=summary.labels,
        devices=frozenset([device_id]),
        devices_with_error=frozenset(),
        devices_reverted=frozenset(),
        devices_crashed=frozenset(),
        errors=0,
        reverts=0,
        crashes=0,
    )
