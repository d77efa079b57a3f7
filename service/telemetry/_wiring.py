"""`build_telemetry`: the telemetry parts the service runtime composes (store, router, workers,
gate), from its storage and an optional source."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import APIRouter

from service.storage import SqlStorage, Storage
from service.telemetry._gate import StorageGroups, TelemetryGate
from service.telemetry._leases import LeaseConfig
from service.telemetry._routes import telemetry_router
from service.telemetry._source import TelemetrySource
from service.telemetry._store import TelemetryStore
from service.telemetry._worker import IngestReport, IngestWorker

__all__ = ["DrainingWorker", "TelemetryParts", "build_telemetry"]


class DrainingWorker:
    """Runs a worker's batches back to back for up to `budget_s` per call (a periodic loop's
    tick), so ingestion keeps up with a busy feed."""

    def __init__(self, worker: IngestWorker, budget_s: float = 1.0) -> None:
        self.worker, self._budget_s = worker, budget_s

    def run_once(self) -> IngestReport:
        deadline = time.monotonic() + self._budget_s
        last = self.worker.run_once()
        while last.received and time.monotonic() < deadline:
            last = self.worker.run_once()
        return last

    def drain(self) -> int:
        return self.worker.drain()

    def close(self) -> None:
        """Release the worker's leases (a clean stop hands its partitions over at once)."""
        self.worker.close()


GATE_DUTY = 0.2  # the gate takes at most about a fifth of the engine's time (TelemetryGate)


@dataclass
class TelemetryParts:
    store: TelemetryStore | None
    router: APIRouter
    gate: TelemetryGate | None = None
    workers: list[DrainingWorker] = field(default_factory=list)


def build_telemetry(
    *,
    storage: Storage,
    source: TelemetrySource | None = None,
    clock: Callable[[], datetime] | None = None,
    partitions: list[str] | None = None,
    leases: LeaseConfig | None = None,
) -> TelemetryParts:
    """Telemetry needs SQL storage; over memory storage the routes answer 503 `unavailable`.
    The worker reads `partitions` (default: all), or with `leases` its share of them."""
    now = clock or (lambda: datetime.now(UTC))
    if not isinstance(storage, SqlStorage):
        return TelemetryParts(store=None, router=telemetry_router(None))
    store = TelemetryStore(storage.engine)
    parts = TelemetryParts(
        store=store,
        router=telemetry_router(store),
        gate=TelemetryGate(store, storage, duty=GATE_DUTY),
    )
    if source is not None:
        worker = IngestWorker(
            source,
            store,
            partitions=partitions,
            leases=leases,
            groups_of=StorageGroups(storage, clock=now),
            clock=now,
        )
        parts.workers.append(DrainingWorker(worker))
    return parts
