"""Synthetic device telemetry for the telemetry tests: batches as devices encode them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from device_agent.protocol.telemetry import (
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
    encode_batch,
    message_id,
)
from service.telemetry import MemorySource

T0_MS = 1_795_000_000_000  # 2026-11-18


@dataclass
class Fleet:
    """Devices that send batches into a `MemorySource`, like the hub would append them."""

    source: MemorySource = field(default_factory=lambda: MemorySource(4))
    seq: dict[str, int] = field(default_factory=dict)
    clock_ms: int = T0_MS

    def batch(
        self,
        device: str,
        release: str | None = "rel-2",
        *,
        n: int = 10,
        latency: float = 2000.0,
        score: float = 0.9,
        model: tuple[str, str] = ("kws", "2"),
        events: tuple[EventRecord, ...] = (),
        rng: random.Random | None = None,
    ) -> TelemetryBatch:
        rng = rng or random.Random(hash((device, self.seq.get(device, 0))))
        seq = self.seq.get(device, 0)
        self.seq[device] = seq + 1
        rows = tuple(
            InferenceRecord(
                core="m4-0",
                model_id=model[0],
                model_version=model[1],
                ts_ms=self.clock_ms + i,
                latency_us=max(1, int(rng.gauss(latency, latency * 0.1))),
                score=round(min(1.0, max(0.0, rng.gauss(score, 0.03))), 5),
                label=rng.choice(["yes", "no", "up"]),
                anomaly=rng.random() < 0.01,
            )
            for i in range(n)
        )
        health = (HealthRecord(self.clock_ms, 100_000, 60, 0, 0, 2),)
        return TelemetryBatch(device, seq, release, rows, health, events)

    def send(self, batch: TelemetryBatch, *, body: bytes | None = None, mid: str | None = None):
        return self.source.append(
            batch.device_id,
            encode_batch(batch) if body is None else body,
            enqueued_ms=self.clock_ms,
            message_id=mid or message_id(batch.device_id, batch.seq),
        )

    def raw(self, device: str | None, body: bytes, mid: str | None = None):
        return self.source.append(device, body, enqueued_ms=self.clock_ms, message_id=mid)
