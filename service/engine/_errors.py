"""The engine's exceptions, split by who must act.

```
EngineError
├── NotLeaderError        another engine holds the leader lease: this one must stay idle
├── UnsupportedError      the rollout asks for something this engine does not do yet (operator)
└── DispatchError         a port refused a command; the message stays queued and is retried
```
Storage errors other than the lease are not translated: they come from the storage port
already as `StorageError` subclasses, and a revision conflict simply means "tick again".
"""

from __future__ import annotations

__all__ = ["DispatchError", "EngineError", "NotLeaderError", "UnsupportedError"]


class EngineError(Exception):
    """Root of the engine's errors."""


class NotLeaderError(EngineError):
    """This engine does not hold (or lost) the leader lease; it must not act."""


class UnsupportedError(EngineError):
    """The rollout needs a feature the engine does not implement yet."""


class DispatchError(EngineError):
    """An outbox command could not be executed now; it will be retried."""
