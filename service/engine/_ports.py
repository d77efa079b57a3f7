"""The engine's ports besides storage and the hub gateway: the director, notices and the
health gate.

`HealthGate.evaluate` is asked once per tick for each gated live rollout, outside any unit of
work; the engine feeds a verdict that differs from the rollout's last one to `decide` as a
`GateResult` event (so a verdict trips a rollout once, and `Resume` acknowledges it). The
tick's verdict is also what a stage is advanced (or tripped) on, and the engine stores exactly
that verdict with the stage, so a gate should fill `GateResult.cohorts` with the sizes it judged.

`DirectorPort.assign`/`revoke` must be idempotent (the dispatcher may repeat a command after a
crash): assigning the release a device already has, or revoking twice, changes nothing visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from service.domain.rollout_events import GateResult
from service.storage import Rollout
from signing.director import DirectorRepository

__all__ = [
    "DirectorPort",
    "HealthGate",
    "MemoryDirector",
    "MemoryHealthGate",
    "MemoryNotifier",
    "Notice",
    "Notifier",
    "SigningDirector",
]


class DirectorPort(Protocol):
    def assign(self, device_id: str, hardware_id: str, release_id: str, now: datetime) -> None:
        """Publish director targets naming `release_id` for the device."""
        ...

    def revoke(self, device_id: str, now: datetime) -> None:
        """Publish empty director targets for the device."""
        ...


@dataclass
class MemoryDirector:
    """Records assignments (device -> release) and the history of every call."""

    assigned: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    def assign(self, device_id: str, hardware_id: str, release_id: str, now: datetime) -> None:
        self.calls.append(("assign", device_id, release_id))
        self.assigned[device_id] = release_id

    def revoke(self, device_id: str, now: datetime) -> None:
        self.calls.append(("revoke", device_id, None))
        self.assigned.pop(device_id, None)


class SigningDirector:
    """Over `signing.director.DirectorRepository`: skips re-signing an unchanged assignment."""

    def __init__(self, repository: DirectorRepository) -> None:
        self._repository = repository

    def assign(self, device_id: str, hardware_id: str, release_id: str, now: datetime) -> None:
        current = self._repository.assignment(device_id)
        if current is None or current.release_id != release_id:
            self._repository.assign(device_id, hardware_id, release_id, now)

    def revoke(self, device_id: str, now: datetime) -> None:
        current = self._repository.assignment(device_id)
        if current is not None and current.release_id is not None:
            self._repository.revoke(device_id, now)


@dataclass(frozen=True)
class Notice:
    """An operator notice: `kind` is a short code (`completed`, `failure-abort`, `approval`)."""

    rollout_id: str
    kind: str
    message: str
    key: str  # idempotency key: (rollout, version, position) of the command


class Notifier(Protocol):
    def notify(self, notice: Notice) -> None: ...


@dataclass
class MemoryNotifier:
    """Keeps notices by key, so a repeated delivery is recorded once."""

    notices: dict[str, Notice] = field(default_factory=dict)
    on_notice: Callable[[Notice], None] | None = None

    def notify(self, notice: Notice) -> None:
        if notice.key not in self.notices:
            self.notices[notice.key] = notice
            if self.on_notice is not None:
                self.on_notice(notice)


class HealthGate(Protocol):
    def evaluate(self, rollout: Rollout, stage: int, now: datetime) -> GateResult | None:
        """The current verdict on `stage` of the rollout, or None when there is nothing to judge."""
        ...


@dataclass
class MemoryHealthGate:
    """Verdicts set by tests, per (rollout id, stage); records every question it was asked."""

    verdicts: dict[tuple[str, int], GateResult] = field(default_factory=dict)
    asked: list[tuple[str, int]] = field(default_factory=list)

    def set(self, rollout_id: str, result: GateResult) -> None:
        self.verdicts[(rollout_id, result.stage)] = result

    def evaluate(self, rollout: Rollout, stage: int, now: datetime) -> GateResult | None:
        self.asked.append((rollout.id, stage))
        return self.verdicts.get((rollout.id, stage))
