"""Synthetic cohorts for the gate tests: seeded, vectorised, with the model's behaviour as knobs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from device_agent.protocol.telemetry import EventRecord
from service.domain.rollups import CohortRollup, merge_all

LABELS = ("idle", "walk", "run", "fall")


@dataclass(frozen=True)
class ModelBehaviour:
    latency_median_us: float = 4000.0
    latency_sigma: float = 0.35  # lognormal shape
    score_a: float = 8.0  # beta(a, b) confidences, mean a / (a + b) = 0.8
    score_b: float = 2.0
    anomaly_rate: float = 0.03
    label_shares: tuple[float, ...] = (0.55, 0.25, 0.15, 0.05)
    error_rate: float = 0.02  # share of devices that report an error, a revert, a crash
    revert_rate: float = 0.0
    crash_rate: float = 0.01

    def but(self, **changes: object) -> ModelBehaviour:
        return replace(self, **changes)  # type: ignore[arg-type]


BASELINE = ModelBehaviour()


def cohort(
    rng: np.random.Generator,
    behaviour: ModelBehaviour,
    *,
    devices: int,
    inferences: int,
    prefix: str,
) -> CohortRollup:
    latency = np.minimum(
        rng.lognormal(np.log(behaviour.latency_median_us), behaviour.latency_sigma, inferences),
        60_000_000,
    ).astype(np.int64)
    scores = rng.beta(behaviour.score_a, behaviour.score_b, inferences)
    codes = rng.choice(len(LABELS), size=inferences, p=np.asarray(behaviour.label_shares))
    names = [f"{prefix}-{i}" for i in range(devices)]
    rows = CohortRollup.from_columns(
        names,
        latency,
        scores,
        label_names=LABELS,
        label_codes=codes,
        anomaly=rng.random(inferences) < behaviour.anomaly_rate,
    )
    events = []
    for name in names:
        happened = []
        if rng.random() < behaviour.error_rate:
            happened.append(EventRecord(1, "reject", "m4-0", "r2", 3, "bad model"))
        if rng.random() < behaviour.revert_rate:
            happened.append(EventRecord(2, "revert", "m4-0", "r2", 0, "selftest failed"))
        if rng.random() < behaviour.crash_rate:
            happened.append(EventRecord(3, "crash", "m4-0", "r2", 0, "hard fault"))
        if happened:
            events.append(CohortRollup.from_records(name, events=happened))
    return merge_all([rows, *events])
