"""Fault injection hooks for the simulated cores: die at a named point, at a message boundary, or
after N inferences (a model that crashes its core once it runs, for testing the health gates),
and fail the self-test of given model versions (a core whose numerics differ from the build's).

A real power cut can happen between any two instructions; these hooks let tests stop the core
process at the points where that matters (between writing a slot and recording it, between
recording a trial and loading it, ...) and at every inbound message, with `os._exit` so that
nothing is flushed or cleaned up, exactly like SIGKILL. A core hosted in a shared process
(`firmware.host`) cannot exit the process: its hooks raise `CoreHalted` instead, which unwinds
out of the core's code (no handler of the core catches a `BaseException`) to the host, which
drops the core where it stood.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

__all__ = ["CRASH_EXIT_CODE", "CRASH_POINTS", "CoreHalted", "FaultHooks", "halt"]

CRASH_EXIT_CODE = 86

# Every named point the core passes during a swap, in the order it passes them.
CRASH_POINTS = (
    "begin:cleared",  # the target slot was marked empty, before any byte was written
    "data:written",  # a DATA chunk reached the partial slot file
    "end:renamed",  # the verified slot file is in place, the table does not list it yet
    "end:recorded",  # the table lists the slot as staged
    "table:temp-written",  # a new table is in its temp file, not yet renamed
    "activate:recorded",  # the trial is recorded, the model not yet loaded
    "activate:tested",  # the self-test ran, its result not yet sent
    "confirm:recorded",  # the confirmation is recorded, not yet acknowledged
)


class CoreHalted(BaseException):
    """A fault hook fired in a core hosted in-process: the host drops that core."""


def _exit_process() -> NoReturn:
    os._exit(CRASH_EXIT_CODE)


def halt() -> NoReturn:
    """The `die` of an in-process core."""
    raise CoreHalted(CRASH_EXIT_CODE)


@dataclass
class FaultHooks:
    """Which fault to inject; the default injects nothing."""

    crash_point: str | None = None
    crash_before_message: int | None = None  # die on receiving the Nth sequenced message
    crash_after_message: int | None = None  # die after handling (and answering) the Nth
    crash_after_inferences: int | None = None  # die instead of running inference N+1 of a boot
    # The versions the inference crash applies to (None: whatever model runs); inferences of
    # other versions neither crash nor count.
    crash_models: frozenset[str] | None = None
    # Versions whose self-test runs and then reports failed, as a core with other numerics would.
    selftest_fail_models: frozenset[str] = frozenset()
    messages_seen: int = 0
    crashing_inferences: int = 0  # inferences this boot of a model the crash applies to
    die: Callable[[], NoReturn] = field(default=_exit_process, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.crash_point is not None and self.crash_point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {self.crash_point!r}")
        if self.crash_after_inferences is not None and self.crash_after_inferences < 0:
            raise ValueError("crash_after_inferences must be 0 or more")
        for name in ("crash_models", "selftest_fail_models"):
            versions = getattr(self, name)
            if versions is not None and not all(isinstance(v, str) and v for v in versions):
                raise ValueError(f"{name} must be model versions (non-empty strings)")

    def point(self, name: str) -> None:
        """Die here if this is the configured crash point."""
        if name == self.crash_point:
            self.die()

    def message_arrived(self) -> None:
        self.messages_seen += 1
        if self.messages_seen == self.crash_before_message:
            self.die()

    def message_handled(self) -> None:
        if self.messages_seen == self.crash_after_message:
            self.die()

    def inference_starting(self, version: str) -> None:
        """Die instead of running the next inference of a model of `version` once this boot ran
        `crash_after_inferences` of the models the crash applies to."""
        if self.crash_after_inferences is None:
            return
        if self.crash_models is not None and version not in self.crash_models:
            return
        if self.crashing_inferences >= self.crash_after_inferences:
            self.die()
        self.crashing_inferences += 1

    def selftest_fails(self, version: str) -> bool:
        """Whether the self-test of a model of `version` is to report failed."""
        return version in self.selftest_fail_models
