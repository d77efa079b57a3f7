"""A clustered, sparse fleet over repeated looks: per-device rollups, as the gate's caller
builds them.

Every device has its own random effects (latency level, score level, anomaly propensity), reports
at a look only with some probability and then only a few rows, and may report an error or a crash
event at any look (a device that did stays in the event sets). `run` yields, per look, the
cumulative per-device rollups of both cohorts: what `evaluate_devices` is given on an engine tick.
The bench (`tests/bench/gates/`) and the unit tests share this simulator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from device_agent.protocol.telemetry import EventRecord
from service.domain.rollups import CohortRollup

Cohort = dict[str, CohortRollup]


@dataclass(frozen=True)
class FleetModel:
    latency_median_us: float = 4000.0
    latency_sigma: float = 0.30  # within a device, lognormal shape
    device_latency_sd: float = 0.10  # between devices, on the log scale
    score_a: float = 8.0  # beta(a, b) scores, mean 0.8
    score_b: float = 2.0
    score_shift: float = 0.0  # added to every score (then clipped to [0, 1])
    device_score_sd: float = 0.03  # between devices, added to their scores
    anomaly_rate: float = 0.03
    device_anomaly_sd: float = 0.8  # between devices, on the logit scale
    error_hazard: float = 0.003  # per device and look
    crash_hazard: float = 0.002
    report_probability: float = 0.5  # a device reports at a look with this probability
    rows_per_report: float = 8.0  # Poisson mean of the rows of one report

    def but(self, **changes: object) -> FleetModel:
        return replace(self, **changes)  # type: ignore[arg-type]


BASELINE = FleetModel()
REJECT = EventRecord(1, "reject", "m4-0", "r2", 3, "bad model")
CRASH = EventRecord(2, "crash", "m4-0", "r2", 0, "hard fault")


@dataclass
class _Device:
    name: str
    log_latency: float
    score_offset: float
    anomaly_rate: float
    rollup: CohortRollup


def _devices(rng: np.random.Generator, model: FleetModel, count: int, prefix: str) -> list[_Device]:
    devices = []
    for i in range(count):
        logit = np.log(model.anomaly_rate / (1 - model.anomaly_rate))
        logit += rng.normal(0.0, model.device_anomaly_sd)
        devices.append(
            _Device(
                f"{prefix}-{i}",
                float(np.log(model.latency_median_us) + rng.normal(0.0, model.device_latency_sd)),
                float(rng.normal(0.0, model.device_score_sd)),
                float(1.0 / (1.0 + np.exp(-logit))),
                CohortRollup.empty(),
            )
        )
    return devices


def _report(rng: np.random.Generator, model: FleetModel, device: _Device) -> CohortRollup:
    parts = []
    if rng.random() < model.report_probability:
        rows = int(rng.poisson(model.rows_per_report))
        latency = np.minimum(
            rng.lognormal(device.log_latency, model.latency_sigma, rows), 60_000_000
        ).astype(np.int64)
        scores = rng.beta(model.score_a, model.score_b, rows) + model.score_shift
        scores = np.clip(scores + device.score_offset, 0.0, 1.0)
        parts.append(
            CohortRollup.from_columns(
                [device.name], latency, scores, anomaly=rng.random(rows) < device.anomaly_rate
            )
        )
    events = [
        e
        for e, h in ((REJECT, model.error_hazard), (CRASH, model.crash_hazard))
        if rng.random() < h
    ]
    if events:
        parts.append(CohortRollup.from_records(device.name, events=events))
    rollup = device.rollup
    for part in parts:
        rollup = rollup.merge(part)
    return rollup


def run(
    seed: int,
    canary_model: FleetModel,
    control_model: FleetModel = BASELINE,
    *,
    canary_devices: int = 3,
    control_devices: int = 15,
    looks: int = 20,
) -> Iterator[tuple[Cohort, Cohort]]:
    """The cumulative per-device rollups of both cohorts at each of `looks` looks."""
    rng = np.random.default_rng([2026_12_04, seed])
    canary = _devices(rng, canary_model, canary_devices, "canary")
    control = _devices(rng, control_model, control_devices, "control")
    for _ in range(looks):
        for model, devices in ((canary_model, canary), (control_model, control)):
            for device in devices:
                device.rollup = _report(rng, model, device)
        yield (
            {d.name: d.rollup for d in canary if d.rollup.devices},
            {d.name: d.rollup for d in control if d.rollup.devices},
        )


def binomial_ceiling(trials: int, rate: float, tail: float = 1e-3) -> int:
    """The smallest k with P(Binomial(trials, rate) > k) < tail: how many FAILs of `trials`
    equal runs a gate calibrated at `rate` may show on a fixed, unlucky set of seeds."""
    below = 0.0
    for k in range(trials + 1):
        below += math.comb(trials, k) * rate**k * (1.0 - rate) ** (trials - k)
        if 1.0 - below < tail:
            return k
    return trials
