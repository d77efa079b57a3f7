"""The service's storage: one port, an in-memory adapter and a SQL adapter (SQLite, PostgreSQL).

```python
storage = open_storage("sqlite:///data/tinyfleet.db")  # after `tinyfleet db upgrade`
with storage.begin() as uow:
    uow.devices.upsert(devices)
    rollout = uow.rollouts.save(rollout, expected_revision=rollout.revision)
    uow.outbox.append("offer", {...}, now)  # committed with the rollout, or not at all
```

Errors (see `_errors.py` for who must act on each):

```
StorageError
├── NotFoundError
├── ConflictError
│   ├── AlreadyExistsError
│   ├── RevisionConflictError
│   └── LeaseLostError
└── UnavailableError
```
"""

from __future__ import annotations

from service.storage._errors import (
    AlreadyExistsError,
    ConflictError,
    LeaseLostError,
    NotFoundError,
    RevisionConflictError,
    StorageError,
    UnavailableError,
)
from service.storage._memory import MemoryStorage
from service.storage._migrate import current_revision, head_revision, upgrade
from service.storage._port import (
    LIVE_JOB_STATES,
    MAX_OUTBOX_ERROR,
    MAX_PAGE,
    AuditLog,
    DeviceGroups,
    DeviceJobs,
    Devices,
    EngineLeases,
    Outbox,
    Releases,
    Rollouts,
    Storage,
    Tokens,
    UnitOfWork,
)
from service.storage._records import (
    ApiToken,
    AuditEntry,
    ChainReport,
    Device,
    DeviceFilter,
    DeviceGroup,
    DeviceJob,
    GroupKind,
    IssuedToken,
    Lease,
    OutboxMessage,
    Page,
    Release,
    Role,
    Rollout,
    RolloutStage,
    check_membership,
    group_filter,
)
from service.storage._sql import PgAdvisoryLock, SqlStorage, normalize_url, sqlite_url

__all__ = [
    "LIVE_JOB_STATES",
    "MAX_OUTBOX_ERROR",
    "MAX_PAGE",
    "AlreadyExistsError",
    "ApiToken",
    "AuditEntry",
    "AuditLog",
    "ChainReport",
    "ConflictError",
    "Device",
    "DeviceFilter",
    "DeviceGroup",
    "DeviceGroups",
    "DeviceJob",
    "DeviceJobs",
    "Devices",
    "EngineLeases",
    "GroupKind",
    "IssuedToken",
    "Lease",
    "LeaseLostError",
    "MemoryStorage",
    "NotFoundError",
    "Outbox",
    "OutboxMessage",
    "Page",
    "PgAdvisoryLock",
    "Release",
    "Releases",
    "RevisionConflictError",
    "Role",
    "Rollout",
    "RolloutStage",
    "Rollouts",
    "SqlStorage",
    "Storage",
    "StorageError",
    "Tokens",
    "UnavailableError",
    "UnitOfWork",
    "check_membership",
    "current_revision",
    "group_filter",
    "head_revision",
    "normalize_url",
    "open_storage",
    "sqlite_url",
    "upgrade",
]


def open_storage(url: str | None) -> Storage:
    """`memory:` (or None) for in-memory storage, else a SQLite or PostgreSQL URL.

    Raises:
        ValueError: unsupported URL.
    """
    if url is None or url == "memory:":
        return MemoryStorage()
    return SqlStorage(url)
