"""A device's summaries become exactly the rollup of its raw rows, so a per-device gate fed
summaries gives the same verdict (PASS and FAIL rows) as one fed the equivalent raw rows."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.protocol.summary import SummaryAccumulator, SummaryRecord
from device_agent.protocol.telemetry import InferenceRecord
from service.domain.device_gates import evaluate_devices
from service.domain.gates import GatePolicy
from service.domain.rollups import CohortRollup, merge_all
from service.telemetry._from_summary import rollup_from_summary

POLICY = GatePolicy(stage="canary", alpha=0.01, min_inferences=100, min_devices=3)
INTERVAL_MS = 60_000


def _rows(rng: np.random.Generator, n: int, version: str, slow: float) -> list[InferenceRecord]:
    latency = np.minimum(rng.lognormal(np.log(4000 * slow), 0.35, n), 60_000_000).astype(int)
    scores = rng.beta(8.0, 2.0, n)
    labels = rng.choice(["idle", "walk", "run"], n)
    flags = rng.random(n) < 0.03
    return [
        InferenceRecord("m4-0", "har", version, int(i * 250), int(lat), float(s), str(lab), bool(f))
        for i, (lat, s, lab, f) in enumerate(zip(latency, scores, labels, flags, strict=True))
    ]


def _summaries(rows: list[InferenceRecord]) -> list[SummaryRecord]:
    intervals: dict[int, SummaryAccumulator] = {}
    for row in rows:
        start = row.ts_ms // INTERVAL_MS * INTERVAL_MS
        acc = intervals.setdefault(
            start, SummaryAccumulator(row.core, row.model_id, row.model_version, start, INTERVAL_MS)
        )
        acc.add(InferenceRecord(**{**row.__dict__, "score": round(row.score, 5)}))
    return [acc.build() for acc in intervals.values()]


def _cohort(seed: int, prefix: str, version: str, slow: float) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    raw: dict[str, CohortRollup] = {}
    summarised: dict[str, CohortRollup] = {}
    for d in range(8):
        device = f"{prefix}-{d}"
        rows = _rows(rng, int(rng.integers(50, 400)), version, slow)
        wire = [InferenceRecord(**{**r.__dict__, "score": round(r.score, 5)}) for r in rows]
        raw[device] = CohortRollup.from_records(device, wire)
        summarised[device] = merge_all(rollup_from_summary(device, s) for s in _summaries(rows))
    return raw, summarised


@pytest.mark.parametrize(("slow", "seed"), [(1.0, 1), (1.0, 2), (1.3, 3), (2.0, 4)])
def test_gate_from_summaries_equals_gate_from_raw_rows(slow: float, seed: int) -> None:
    canary_raw, canary_sum = _cohort(seed, "c", "2.0.0", slow)
    control_raw, control_sum = _cohort(seed + 100, "k", "1.0.0", 1.0)
    for device, rollup in canary_raw.items():
        assert canary_sum[device] == rollup
    from_raw = evaluate_devices(POLICY, canary_raw, control_raw)
    from_summaries = evaluate_devices(POLICY, canary_sum, control_sum)
    assert from_summaries.outcome == from_raw.outcome
    assert from_summaries == from_raw
