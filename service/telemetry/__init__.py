"""Telemetry ingestion, rollups, the real health gate and the telemetry queries (issue 6).

```python
store = TelemetryStore(SqlStorage(url).engine)        # after `tinyfleet db upgrade` (0003+)
worker = IngestWorker(source, store, partitions=["0", "1"], groups_of=StorageGroups(storage))
worker = IngestWorker(source, store, leases=LeaseConfig(ttl=timedelta(seconds=30)))  # shared
report = worker.run_once()                              # receive, commit, checkpoint
gate = TelemetryGate(store, storage)                    # the engine's HealthGate port
parts = build_telemetry(storage=storage, source=source)  # what the service runtime wires
```

Errors (see `_errors.py`):

```
TelemetryServiceError
├── SourceError
│   └── SourceConfigError
├── TelemetryStoreError
└── LeaseLostError
```
"""

from __future__ import annotations

from service.telemetry._errors import (
    LeaseLostError,
    SourceConfigError,
    SourceError,
    TelemetryServiceError,
    TelemetryStoreError,
)
from service.telemetry._eventhub import EventHubConfig, EventHubSource, event_from_eventdata
from service.telemetry._gate import StorageGroups, TelemetryGate, gate_policy, verdict_numbers
from service.telemetry._leases import DEFAULT_LEASE_TTL, LeaseChange, LeaseConfig
from service.telemetry._routes import telemetry_router
from service.telemetry._source import MemorySource, SourceEvent, TelemetrySource
from service.telemetry._store import CommitResult, DeadLetter, TelemetryStore
from service.telemetry._wiring import TelemetryParts, build_telemetry
from service.telemetry._worker import InFlightError, IngestReport, IngestWorker, Received

__all__ = [
    "DEFAULT_LEASE_TTL",
    "CommitResult",
    "DeadLetter",
    "EventHubConfig",
    "EventHubSource",
    "InFlightError",
    "IngestReport",
    "IngestWorker",
    "LeaseChange",
    "LeaseConfig",
    "LeaseLostError",
    "MemorySource",
    "Received",
    "SourceConfigError",
    "SourceError",
    "SourceEvent",
    "StorageGroups",
    "TelemetryGate",
    "TelemetryParts",
    "TelemetryServiceError",
    "TelemetrySource",
    "TelemetryStore",
    "TelemetryStoreError",
    "build_telemetry",
    "event_from_eventdata",
    "gate_policy",
    "telemetry_router",
    "verdict_numbers",
]
