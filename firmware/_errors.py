"""The exception tree of the simulated cores, split by who must act.

```
FirmwareError                  root
├── ImageError                 the firmware image file is unusable (whoever built or shipped it)
├── StorageError               the slot store could not be read or written (the host machine)
├── SlotTransitionError        an illegal slot-table transition (a bug in the core)
└── ModelRejectedError         a model was refused; carries the wire `ReasonCode` (the release)
```
"""

from __future__ import annotations

from firmware.icc import ReasonCode

__all__ = [
    "FirmwareError",
    "ImageError",
    "ModelRejectedError",
    "SlotTransitionError",
    "StorageError",
]


class FirmwareError(Exception):
    """Root of every error raised by `firmware`."""


class ImageError(FirmwareError):
    """The firmware image description is missing or invalid."""


class StorageError(FirmwareError):
    """Persisting or loading the slot table or a slot failed."""


class SlotTransitionError(FirmwareError):
    """A slot event is not allowed in the slot's current state."""


class ModelRejectedError(FirmwareError):
    """A model was refused, with the reason code the core reports on the wire."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(f"{reason.name}: {detail}")
        self.reason = reason
        self.detail = detail
