"""The storage error family: every adapter turns its driver's failures into these.

```
StorageError                      base; catch this to handle any storage failure
├── NotFoundError                 the record does not exist: the caller asked for the wrong id
├── ConflictError                 the write collides with what is stored: re-read and decide
│   ├── AlreadyExistsError        an immutable or unique record with this key exists (releases, ids)
│   ├── RevisionConflictError     optimistic concurrency: someone saved the rollout first
│   └── LeaseLostError            the engine lease is held by another holder or has expired
└── UnavailableError              the database cannot be reached, is locked or broke the link:
                                  retry later with back-off; nothing was committed
```

SQLAlchemy and driver exceptions are translated at the adapter (`raise ... from exc`), so no
caller ever imports `sqlalchemy.exc`. Misuse of the API (a naive datetime, an unknown role) is a
bug and raises `ValueError`, not a `StorageError`.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "LeaseLostError",
    "NotFoundError",
    "RevisionConflictError",
    "StorageError",
    "UnavailableError",
]


class StorageError(Exception):
    """Root of every error the storage layer raises."""


class NotFoundError(StorageError):
    """The record asked for does not exist."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(StorageError):
    """The write conflicts with stored data; re-read and decide again."""


class AlreadyExistsError(ConflictError):
    """A record with this key exists and may not be replaced."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind = kind
        self.key = key


class RevisionConflictError(ConflictError):
    """Optimistic concurrency: the stored revision is not the one the caller read."""

    def __init__(self, rollout_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"rollout {rollout_id!r} is at revision {actual}, not the expected {expected}"
        )
        self.rollout_id = rollout_id
        self.expected = expected
        self.actual = actual


class LeaseLostError(ConflictError):
    """The lease is not held by the caller (another holder took it, or it expired)."""

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(f"lease {name!r} is not held by {holder!r}")
        self.name = name
        self.holder = holder


class UnavailableError(StorageError):
    """The database is unreachable, locked or dropped the connection; retry with back-off."""
