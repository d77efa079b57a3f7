"""The rollout machine's input events, as data (the table that uses them is in `rollout.py`).

Operators send Start, Approve, Pause, Resume, Abort, Rollback and NextStage (each names the
operator, for the audit log and the two-person rule); health gates send `GateResult`; the engine
sends `RollbackPlanned` once it created the rollback jobs; `Tick` is the passage of time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

from service.domain.spec import FailureAction

__all__ = [
    "Abort",
    "Approve",
    "GateResult",
    "NextStage",
    "Pause",
    "Resume",
    "Rollback",
    "RollbackPlanned",
    "RolloutEvent",
    "Start",
    "Tick",
    "Verdict",
]


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True)
class Start:
    operator: str


@dataclass(frozen=True)
class Approve:
    operator: str


@dataclass(frozen=True)
class Pause:
    operator: str
    reason: str = "paused by an operator"


@dataclass(frozen=True)
class Resume:
    operator: str


@dataclass(frozen=True)
class Abort:
    operator: str
    reason: str = "aborted by an operator"


@dataclass(frozen=True)
class Rollback:
    operator: str
    reason: str = "rolled back by an operator"


@dataclass(frozen=True)
class NextStage:
    operator: str


@dataclass(frozen=True)
class GateResult:
    """A health gate's verdict on `stage` (from `service.domain.gates`); `action` overrides the
    spec's failure action for a FAIL. `numbers` are at most three key figures (they go into the
    rollout's reason); `cohorts` are the sizes it was judged on (canary and control devices and
    inferences, the stage's devices and how many of them soaked), stored with the stage that
    this verdict decides."""

    stage: int
    verdict: Verdict
    reason: str = ""
    numbers: Mapping[str, float] = field(default_factory=dict)
    action: FailureAction | None = None
    cohorts: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackPlanned:
    jobs: int  # how many rollback jobs the engine created for StartRollback


@dataclass(frozen=True)
class Tick:
    pass


RolloutEvent: TypeAlias = (
    Start
    | Approve
    | Pause
    | Resume
    | Abort
    | Rollback
    | NextStage
    | GateResult
    | RollbackPlanned
    | Tick
)
