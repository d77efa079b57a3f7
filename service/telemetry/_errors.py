"""The telemetry package's exceptions, split by who must act.

```
TelemetryServiceError
├── SourceError            the feed failed (network, hub, checkpoint store): retry later
│   └── SourceConfigError  the source is configured wrongly: the operator fixes the config
└── TelemetryStoreError    the telemetry database failed: retry later (storage errors, translated)
```

Bad telemetry is not an exception here: it becomes a dead letter with its reason.
"""

from __future__ import annotations

__all__ = ["SourceConfigError", "SourceError", "TelemetryServiceError", "TelemetryStoreError"]


class TelemetryServiceError(Exception):
    """Root of the telemetry service's errors."""


class SourceError(TelemetryServiceError):
    """Receiving from or checkpointing the telemetry feed failed."""


class SourceConfigError(SourceError, ValueError):
    """The telemetry source's configuration is invalid."""


class TelemetryStoreError(TelemetryServiceError):
    """Reading or writing telemetry in the database failed."""
