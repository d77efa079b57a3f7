"""The telemetry package's exceptions, split by who must act.

```
TelemetryServiceError
├── SourceError            the feed failed (network, hub, checkpoint store): retry later
│   └── SourceConfigError  the source is configured wrongly: the operator fixes the config
├── TelemetryStoreError    the telemetry database failed: retry later (storage errors, translated)
└── LeaseLostError         a commit named partitions whose lease the worker no longer holds:
                           nothing was written; the worker drops them (their new owner goes on)
```

Bad telemetry is not an exception here: it becomes a dead letter with its reason.
"""

from __future__ import annotations

__all__ = [
    "LeaseLostError",
    "SourceConfigError",
    "SourceError",
    "TelemetryServiceError",
    "TelemetryStoreError",
]


class TelemetryServiceError(Exception):
    """Root of the telemetry service's errors."""


class SourceError(TelemetryServiceError):
    """Receiving from or checkpointing the telemetry feed failed."""


class SourceConfigError(SourceError, ValueError):
    """The telemetry source's configuration is invalid."""


class TelemetryStoreError(TelemetryServiceError):
    """Reading or writing telemetry in the database failed."""


class LeaseLostError(TelemetryServiceError):
    """The commit was refused: another worker took over `partitions` (or their epoch moved)."""

    def __init__(self, partitions: list[str], detail: str) -> None:
        super().__init__(f"lease lost on partitions {partitions}: {detail}")
        self.partitions = partitions
