"""Synthetic device telemetry for the telemetry tests: batches as devices encode them."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_agent.protocol.telemetry import (
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
    encode_batch,
    message_id,
)
from service.storage import Device, DeviceJob, Storage
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
        # Seeded from a string, not hash(): str hashes change with PYTHONHASHSEED, so a test's rows
        # would differ from one process to the next.
        rng = rng or random.Random(f"{device}/{self.seq.get(device, 0)}")
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


def plan_jobs(
    storage: Storage,
    jobs: Mapping[str, tuple[int, str]],
    *,
    rollout_id: str = "ro-1",
    release_id: str = "rel-2",
    site: str = "berlin",
) -> None:
    """Register the devices (tagged `site`) and give each a job of the rollout: device id ->
    (stage, state); `jobs.add` needs the devices and the release to exist."""
    at = datetime.fromtimestamp(T0_MS / 1000, tz=UTC)
    with storage.begin() as uow:
        uow.devices.upsert(
            Device(
                id=device_id,
                hardware_id="mt3620",
                profile="kws",
                agent_version="1.0.0",
                tags={"site": site},
                reported={},
                last_seen=None,
                created_at=at,
            )
            for device_id in jobs
        )
        uow.jobs.add(
            DeviceJob(rollout_id, device_id, stage, state, at, release_id=release_id)
            for device_id, (stage, state) in jobs.items()
        )


def halves(devices: int = 20, *, stage: int = 0) -> dict[str, tuple[int, str]]:
    """Even devices updated and confirmed in `stage`, odd ones still pending in it."""
    return {f"dev-{d}": (stage, "confirmed" if d % 2 == 0 else "pending") for d in range(devices)}
