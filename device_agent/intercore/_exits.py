"""How a core's process ended, in the words a crash event carries.

Invariants:
- Pure: no I/O, no clock; the same status and model always give the same text.
- `crash_code(status)` is the exit status as `subprocess` reports it (negative: the signal
  that ended the process), or `EXIT_UNKNOWN` (256, outside both ranges) when the host cannot
  say (the core is a thread, or the process still runs but its link is gone).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

__all__ = ["EXIT_UNKNOWN", "RunningModel", "crash_code", "crash_reason"]

EXIT_UNKNOWN = 256


@dataclass(frozen=True)
class RunningModel:
    """The model a core last said it runs (CAPS, or an inference result)."""

    slot: int
    model_id: str
    version: str


def crash_code(status: int | None) -> int:
    return EXIT_UNKNOWN if status is None else status


def _how(status: int | None) -> str:
    if status is None:
        return "link lost"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with code {status}"


def crash_reason(status: int | None, running: RunningModel | None) -> str:
    model = (
        "no model"
        if running is None
        else f"{running.model_id} {running.version} in slot {running.slot}"
    )
    return f"{_how(status)} while running {model}"
