"""The device job machine's input events, as data (the table that uses them is in `jobs.py`).

`jobs.observe` derives Progressed, Activated, Confirmed, Rejected, Failed, Reverted and
HealthFailed from the device's reported twin; `jobs.expire` derives Deadline from the clock; the
engine sends Offered, Cancel and Supersede, and per-device HealthFailed verdicts from telemetry.
`DeviceReport` is the device's side of it: what its reported twin says, read through the wire
contract's parser (`device_agent.protocol.parse_reported`, which DESIGN lets the service
import), so the service never reads the device's strings itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

from device_agent.protocol import (
    AgentState,
    CoreReport,
    CoreState,
    WorkflowPhase,
    parse_reported,
)

if TYPE_CHECKING:
    from service.domain.jobs import JobState

__all__ = [
    "Activated",
    "Cancel",
    "Confirmed",
    "CoreHealth",
    "Deadline",
    "DeviceReport",
    "Failed",
    "HealthFailed",
    "JobEvent",
    "Offered",
    "Progressed",
    "Rejected",
    "Reverted",
    "Supersede",
]


_HEALTHY_CORE_STATES = frozenset((CoreState.RUNNING, CoreState.STAGED, CoreState.SELFTEST))
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CoreHealth:
    """One core, as its agent reported it: its state and its liveness since its activation."""

    state: CoreState
    activated_at: datetime | None = None
    heartbeat_at: datetime | None = None
    inferences: int = 0  # inference results since `activated_at`

    def alive_at(self, now: datetime, silence: timedelta) -> bool:
        """Whether the core showed itself: a heartbeat after its activation no older than
        `silence` at `now`, and at least one inference result since the activation."""
        beat = self.heartbeat_at
        if beat is None or now - beat > silence or self.inferences < 1:
            return False
        return self.activated_at is None or beat >= self.activated_at


@dataclass(frozen=True)
class DeviceReport:
    """What the device's reported twin (`tinyfleet.agent`) says, and when it was last heard.

    `phase` is the agent's `WorkflowPhase` for `workflow_id` (None from an agent that does not
    report phases: then `state` and `step` tell the phase)."""

    state: AgentState
    workflow_id: str | None
    installed_release_id: str | None
    seen_at: datetime
    reason: str = ""
    step: str = ""
    cores: Mapping[str, CoreHealth] | None = None
    phase: WorkflowPhase | None = None

    @classmethod
    def from_twin(cls, agent: Mapping[str, object], seen_at: datetime) -> DeviceReport:
        """Read `tinyfleet.agent` through the wire contract's one parser
        (`device_agent.protocol.parse_reported`).

        Raises:
            TwinError: the device-written document does not follow the contract.
        """
        reported = parse_reported(dict(agent))
        result = reported.last_result
        has_phase = isinstance(agent.get("phase"), dict)
        return cls(
            state=reported.state,
            workflow_id=(reported.phase_workflow_id if has_phase else None) or reported.workflow_id,
            installed_release_id=reported.installed_release,
            seen_at=seen_at,
            reason=reported.phase_reason or (result.reason if result else ""),
            step=result.step if result else "",
            cores={core: _health(report) for core, report in reported.cores.items()},
            phase=reported.phase if has_phase else None,
        )

    def unhealthy_cores(self) -> list[str]:
        return sorted(
            f"{core}:{health.state.value}"
            for core, health in (self.cores or {}).items()
            if health.state not in _HEALTHY_CORE_STATES
        )

    def silent_cores(self, now: datetime, silence: timedelta) -> list[str]:
        """The cores that did not show themselves alive since their activation (see
        `CoreHealth.alive_at`); a report without cores has every core silent."""
        if not self.cores:
            return ["*"]
        return sorted(c for c, h in self.cores.items() if not h.alive_at(now, silence))


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + ms * _MS


def _health(report: CoreReport) -> CoreHealth:
    return CoreHealth(
        report.state, _at(report.activated_at_ms), _at(report.heartbeat_at_ms), report.inferences
    )


@dataclass(frozen=True)
class Offered:
    workflow_id: str


@dataclass(frozen=True)
class Progressed:
    phase: JobState


@dataclass(frozen=True)
class Activated:
    pass


@dataclass(frozen=True)
class Confirmed:
    pass


@dataclass(frozen=True)
class Rejected:
    reason: str
    step: str


@dataclass(frozen=True)
class Failed:
    reason: str
    step: str


@dataclass(frozen=True)
class Reverted:
    reason: str
    step: str


@dataclass(frozen=True)
class HealthFailed:
    reason: str


@dataclass(frozen=True)
class Deadline:
    stalled: bool = False  # no phase progress for `retry.install_stall`, not the job's deadline


@dataclass(frozen=True)
class Cancel:
    reason: str


@dataclass(frozen=True)
class Supersede:
    reason: str


JobEvent: TypeAlias = (
    Offered
    | Progressed
    | Activated
    | Confirmed
    | Rejected
    | Failed
    | Reverted
    | HealthFailed
    | Deadline
    | Cancel
    | Supersede
)
