"""The exception tree of the inter-core host side, split by who must act.

```
CoreLinkError                    root: every failure of a call into `device_agent.intercore`
├── CoreUnavailableError         the core does not answer, its process ended, or the link
│                                failed (the agent should restart the core and reconnect)
├── CoreRefusedError             the core refused a step or a model failed its self-test;
│                                `.reason` is the wire ReasonCode to report (the release is bad)
├── TargetMetadataError          the release's custom fields are unusable (the release is bad)
└── CoreStateError               the call is illegal in the current state (a bug in the caller)
```
Foreign errors (`OSError` from sockets, `firmware.icc.IccError`) are translated at the adapter
with `raise ... from exc`.
"""

from __future__ import annotations

from firmware.icc import MessageType, ReasonCode

__all__ = [
    "CoreLinkError",
    "CoreRefusedError",
    "CoreStateError",
    "CoreUnavailableError",
    "TargetMetadataError",
]


class CoreLinkError(Exception):
    """Root of every error raised by `device_agent.intercore`."""


class CoreUnavailableError(CoreLinkError):
    """The core cannot be reached: timeout, closed socket, or retransmissions exhausted."""


class CoreRefusedError(CoreLinkError):
    """The core answered NACK, or activation failed; the core keeps (or went back to) its
    previous model."""

    def __init__(self, step: MessageType, reason: ReasonCode, detail: str = "") -> None:
        super().__init__(f"{step.name} refused: {reason.name}" + (f" ({detail})" if detail else ""))
        self.step = step
        self.reason = reason
        self.detail = detail


class TargetMetadataError(CoreLinkError):
    """The model target's custom metadata is missing a field or holds a bad value."""


class CoreStateError(CoreLinkError):
    """The operation is not valid in the host's current view of the core."""
