"""Telemetry summaries for the API: stored rollups merged per bucket, release, model and core.

Invariants:
- Pure: rollup rows in, JSON-ready items out; exact counts (rollups merge exactly).
- Device rows (model id "") contribute only their error counts, to the items of the same
  bucket, release and core.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from service.domain.rollups import CohortRollup, merge_all

__all__ = ["BUCKETS", "summarize"]

BUCKETS = {"minute": 60_000, "hour": 3_600_000}


def summarize(
    rows: Iterable[tuple[dict[str, Any], CohortRollup]], bucket: str = "hour"
) -> list[dict[str, Any]]:
    width = BUCKETS[bucket]
    models: dict[tuple[int, str, str, str, str], list[CohortRollup]] = {}
    errors: dict[tuple[int, str, str], int] = {}
    for key, rollup in rows:
        start = int(key["bucket_ms"]) // width * width
        if key["model_id"] == "":
            where = (start, key["release_id"], key["core"])
            errors[where] = errors.get(where, 0) + rollup.errors
            continue
        group = (start, key["release_id"], key["model_id"], key["model_version"], key["core"])
        models.setdefault(group, []).append(rollup)
    items = []
    for (start, release, model_id, version, core), parts in sorted(models.items()):
        merged = merge_all(parts)
        items.append(
            {
                "bucket_start": datetime.fromtimestamp(start / 1000, tz=UTC).isoformat(),
                "release_id": release or None,
                "model_id": model_id,
                "model_version": version,
                "core": core,
                "count": merged.inferences,
                "latency_mean_us": merged.latency_mean_us,
                "latency_p50_us": merged.latency_quantile_us(0.5) if merged.inferences else 0.0,
                "latency_p95_us": merged.latency_quantile_us(0.95) if merged.inferences else 0.0,
                "score_mean": merged.score_mean,
                "anomaly_rate": merged.anomaly_rate,
                "errors": errors.get((start, release, core), 0),
                "labels": merged.label_counts,
                "devices": len(merged.devices),
            }
        )
    return items
