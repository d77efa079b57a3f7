"""The host's view of one core's update state, as a transition table.

```
DISCONNECTED --connect(caps)--> READY | STAGED | TRIAL   (from what CAPS reports)
READY   --stage-->    STAGING   --staged--> STAGED
                                --failed--> READY
STAGED  --stage-->    STAGING
STAGED  --activated--> TRIAL    --confirmed--> READY
        --rejected-->  READY    --reverted-->  READY
READY   --reverted--> READY     (a rollback of a confirmed model)
any     --disconnected--> DISCONNECTED
```
An event not in the table raises `CoreStateError` naming the state and the event: it means the
caller asked for something out of order (activate before staging, confirm without a trial).
"""

from __future__ import annotations

from enum import Enum

from device_agent.intercore._errors import CoreStateError

__all__ = ["HostPhase", "next_phase"]


class HostPhase(Enum):
    DISCONNECTED = "disconnected"
    READY = "ready"
    STAGING = "staging"
    STAGED = "staged"
    TRIAL = "trial"


_CONNECTED = {
    "connect-ready": HostPhase.READY,
    "connect-staged": HostPhase.STAGED,
    "connect-trial": HostPhase.TRIAL,
}

TRANSITIONS: dict[HostPhase, dict[str, HostPhase]] = {
    HostPhase.DISCONNECTED: dict(_CONNECTED),
    HostPhase.READY: {**_CONNECTED, "stage": HostPhase.STAGING, "reverted": HostPhase.READY},
    HostPhase.STAGING: {"staged": HostPhase.STAGED, "failed": HostPhase.READY},
    HostPhase.STAGED: {
        **_CONNECTED,
        "stage": HostPhase.STAGING,
        "activated": HostPhase.TRIAL,
        "rejected": HostPhase.READY,
        "reverted": HostPhase.STAGED,
    },
    HostPhase.TRIAL: {**_CONNECTED, "confirmed": HostPhase.READY, "reverted": HostPhase.READY},
}


def next_phase(phase: HostPhase, event: str) -> HostPhase:
    """The phase after `event`, or CoreStateError if `event` is illegal in `phase`."""
    if event == "disconnected":
        return HostPhase.DISCONNECTED
    target = TRANSITIONS[phase].get(event)
    if target is None:
        raise CoreStateError(f"cannot {event!r} while the core is {phase.value}")
    return target
