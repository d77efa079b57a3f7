"""The device job machine's input events, as data (the table that uses them is in `jobs.py`).

`jobs.observe` derives Progressed, Activated, Confirmed, Rejected, Failed, Reverted and
HealthFailed from the device's reported twin; `jobs.expire` derives Deadline from the clock; the
engine sends Offered, Cancel and Supersede, and per-device HealthFailed verdicts from telemetry.
`DeviceReport` is the device's side of it: what its reported twin says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from service.domain.jobs import JobState

__all__ = [
    "Activated",
    "Cancel",
    "Confirmed",
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


_HEALTHY_CORE_STATES = frozenset(("running", "staged", "selftest"))


@dataclass(frozen=True)
class DeviceReport:
    """What the device's reported twin (`tinyfleet.agent`) says, and when it was last heard."""

    state: str  # idle | deploying | failed
    workflow_id: str | None
    installed_release_id: str | None
    seen_at: datetime
    reason: str = ""
    step: str = ""
    core_states: Mapping[str, str] | None = None  # core id -> running | staged | ... | fault

    @classmethod
    def from_twin(cls, agent: Mapping[str, object], seen_at: datetime) -> DeviceReport:
        """Read the shapes of `device_agent.protocol.ReportedAgent.to_json`; unknown or missing
        fields read as absent (the twin is device-written and untrusted)."""
        workflow = agent.get("workflow")
        result = agent.get("lastResult")
        cores = agent.get("cores")
        return cls(
            state=_text(agent.get("state")),
            workflow_id=_text(workflow.get("id")) or None if isinstance(workflow, dict) else None,
            installed_release_id=_text(agent.get("installedReleaseId")) or None,
            seen_at=seen_at,
            reason=_text(result.get("reason")) if isinstance(result, dict) else "",
            step=_text(result.get("step")) if isinstance(result, dict) else "",
            core_states={
                str(core): _text(report.get("state"))
                for core, report in cores.items()
                if isinstance(report, dict)
            }
            if isinstance(cores, dict)
            else None,
        )

    def unhealthy_cores(self) -> list[str]:
        return sorted(
            f"{core}:{state or 'unknown'}"
            for core, state in (self.core_states or {}).items()
            if state not in _HEALTHY_CORE_STATES
        )


def _text(value: object) -> str:
    return value[:256] if isinstance(value, str) else ""


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
    pass


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
