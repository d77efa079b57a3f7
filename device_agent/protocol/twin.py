"""The device twin shapes: what the service desires, what the agent reports.

Modelled on Azure Device Update's twin protocol (an IoT Plug and Play component with a writable
`service` property and a read-only `agent` property; workflow `action` 3 = deploy, 255 = cancel),
under the component name `tinyfleet`. The twin is not trusted: it only tells the agent *when* to
check and *where* the repositories are. *What* to install comes from signed director metadata.

Invariants:
- Parsing never raises anything but `TwinError`, whose `reason` is a short code.
- A desired document is accepted only with a numeric root `$version`.
- Reported documents stay within the hub's 32 KB reported-properties budget (checked by `encode`).
- `parse_reported(ReportedAgent.to_json())` gives back an equal value: the agent writes and the
  service reads the one shape, through these enums (`WorkflowPhase`, `CoreState`); a value the
  enums do not know reads as `TwinError("bad-reported", ...)`, never as a guess.
- A phase is always about one workflow: `phase.workflowId` names the run it describes, which may
  differ from the desired `workflow.id` (the agent has not picked the new one up yet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "COMPONENT",
    "MAX_REPORTED_BYTES",
    "AgentState",
    "CoreReport",
    "CoreState",
    "DesiredService",
    "ReportedAgent",
    "ResultReport",
    "TwinError",
    "WorkflowAction",
    "WorkflowPhase",
    "ack_patch",
    "agent_patch",
    "parse_desired",
    "parse_reported",
]

COMPONENT = "tinyfleet"
MAX_REPORTED_BYTES = 32 * 1024
MAX_ID = 128
_E = TypeVar("_E", bound=Enum)


class TwinError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class WorkflowAction(IntEnum):
    DEPLOY = 3
    CANCEL = 255


class AgentState(StrEnum):
    IDLE = "idle"
    DEPLOYING = "deploying"
    FAILED = "failed"


class WorkflowPhase(StrEnum):
    """Where the agent's run of one workflow is, in order; the last three end the run.

    downloading: metadata checked, targets streaming into the cores' inactive slots (a firmware
    target boots its core as it is staged); staged: every target is in its slot, nothing runs
    it; activating: cores switching to the new slots; trial: every core runs the new model and
    passed its self-test, not yet confirmed; confirmed: the release is installed (also when the
    device was already up to date); reverted: every core is back on what it ran before
    (`reason` says why: `cancelled`, a self-test code, ...); failed: the run ended before
    anything was activated (`reason` is the code), nothing was changed.
    """

    IDLE = "idle"
    DOWNLOADING = "downloading"
    STAGED = "staged"
    ACTIVATING = "activating"
    TRIAL = "trial"
    CONFIRMED = "confirmed"
    REVERTED = "reverted"
    FAILED = "failed"


class CoreState(StrEnum):
    """What a core is doing, as its agent sees it (the core's own state, or `offline`)."""

    EMPTY = "empty"
    RUNNING = "running"
    RECEIVING = "receiving"
    STAGED = "staged"
    SELFTEST = "selftest"
    REVERTED = "reverted"
    FAULT = "fault"
    OFFLINE = "offline"


@dataclass(frozen=True)
class DesiredService:
    """The service's writable property: a workflow and where to fetch signed metadata."""

    version: int  # the desired document's root $version, echoed in the acknowledgement
    action: WorkflowAction
    workflow_id: str
    retry_timestamp: str | None
    image_url: str | None
    director_url: str | None
    targets_url: str | None
    url_query: str  # e.g. a SAS token, appended to every repository request
    telemetry_interval_s: int


def _url(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise TwinError("bad-url", f"{name} must be a string URL")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http", "store") or not value.endswith("/"):
        raise TwinError("bad-url", f"{name} must be an http(s) URL ending in /")
    return value


def parse_desired(document: object) -> DesiredService | None:
    """The `tinyfleet.service` part of a desired document (full or patch); None when absent."""
    if not isinstance(document, dict):
        raise TwinError("malformed", "desired properties must be a JSON object")
    version = document.get("$version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TwinError("malformed", "desired properties carry no numeric $version")
    component = document.get(COMPONENT)
    if component is None:
        return None
    if not isinstance(component, dict) or not isinstance(component.get("service"), dict):
        raise TwinError("malformed", f"{COMPONENT}.service must be an object")
    service: dict[str, Any] = component["service"]
    workflow = service.get("workflow")
    if not isinstance(workflow, dict):
        raise TwinError("malformed", "service.workflow must be an object")
    raw_action = workflow.get("action")
    try:
        if not isinstance(raw_action, int) or isinstance(raw_action, bool):
            raise ValueError(raw_action)
        action = WorkflowAction(raw_action)
    except ValueError as exc:
        raise TwinError("bad-action", f"workflow.action {workflow.get('action')!r}") from exc
    workflow_id = workflow.get("id")
    if not isinstance(workflow_id, str) or not 0 < len(workflow_id) <= MAX_ID:
        raise TwinError("malformed", "workflow.id must be a non-empty string")
    retry = workflow.get("retryTimestamp")
    if retry is not None and not isinstance(retry, str):
        raise TwinError("malformed", "workflow.retryTimestamp must be a string")
    repository = service.get("repository") or {}
    if not isinstance(repository, dict):
        raise TwinError("malformed", "service.repository must be an object")
    query = repository.get("query") or ""
    if not isinstance(query, str) or len(query) > 2048 or query.startswith("?"):
        raise TwinError("malformed", "repository.query must be a string without '?'")
    telemetry = service.get("telemetry") or {}
    interval = telemetry.get("intervalSeconds", 60) if isinstance(telemetry, dict) else None
    if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 86400:
        raise TwinError("malformed", "telemetry.intervalSeconds must be 1..86400")
    parsed = DesiredService(
        version=version,
        action=action,
        workflow_id=workflow_id,
        retry_timestamp=retry,
        image_url=_url(repository.get("imageUrl"), "imageUrl"),
        director_url=_url(repository.get("directorUrl"), "directorUrl"),
        targets_url=_url(repository.get("targetsUrl"), "targetsUrl"),
        url_query=query,
        telemetry_interval_s=interval,
    )
    if action is WorkflowAction.DEPLOY and None in (
        parsed.image_url,
        parsed.director_url,
        parsed.targets_url,
    ):
        raise TwinError("malformed", "a deploy workflow needs imageUrl, directorUrl and targetsUrl")
    return parsed


@dataclass(frozen=True)
class ResultReport:
    """The outcome of a step: `code` 0 is success; `reason` a short code (e.g. `target-hash`)."""

    code: int
    reason: str = ""
    detail: str = ""
    step: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "reason": self.reason,
            "detail": self.detail[:512],
            "step": self.step,
        }


@dataclass(frozen=True)
class CoreReport:
    """One core: what it runs (its active slot's model), its state, and its liveness since the
    last activation, observed by the agent: when the core's last heartbeat arrived (agent clock,
    ms since the epoch) and how many inference results it sent since it was activated."""

    firmware_version: str
    state: CoreState
    slot: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    last_result: ResultReport | None = None
    activated_at_ms: int | None = None
    heartbeat_at_ms: int | None = None
    inferences: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "firmwareVersion": self.firmware_version,
            "state": self.state.value,
            "slot": self.slot,
            "activeModel": None
            if self.model_id is None
            else {
                "modelId": self.model_id,
                "version": self.model_version,
                "sha256": self.model_sha256,
            },
            "lastResult": self.last_result.to_json() if self.last_result else None,
            "activatedAtMs": self.activated_at_ms,
            "heartbeatAtMs": self.heartbeat_at_ms,
            "inferences": self.inferences,
        }


@dataclass(frozen=True)
class ReportedAgent:
    agent_version: str
    profile: str
    hardware_id: str
    state: AgentState
    workflow_action: WorkflowAction | None = None
    workflow_id: str | None = None
    installed_release: str | None = None
    last_result: ResultReport | None = None
    cores: dict[str, CoreReport] = field(default_factory=dict)
    phase: WorkflowPhase = WorkflowPhase.IDLE
    phase_workflow_id: str | None = None  # the run the phase is about
    phase_reason: str = ""  # the code of a failed or reverted run (`cancelled`, `target-hash`)

    def to_json(self) -> dict[str, Any]:
        return {
            "agentVersion": self.agent_version,
            "profile": self.profile,
            "hardwareId": self.hardware_id,
            "state": self.state.value,
            "workflow": None
            if self.workflow_id is None
            else {
                "action": int(self.workflow_action or WorkflowAction.DEPLOY),
                "id": self.workflow_id,
            },
            "installedReleaseId": self.installed_release,
            "lastResult": self.last_result.to_json() if self.last_result else None,
            "cores": {core: report.to_json() for core, report in sorted(self.cores.items())},
            "phase": {
                "name": self.phase.value,
                "workflowId": self.phase_workflow_id,
                "reason": self.phase_reason[:64],
            },
        }


def _str(document: dict[str, Any], key: str, *, optional: bool = True, limit: int = 256) -> Any:
    value = document.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise TwinError("bad-reported", f"{key} must be a string of at most {limit} characters")
    return value


def _int(document: dict[str, Any], key: str) -> int | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TwinError("bad-reported", f"{key} must be a non-negative integer")
    return value


def _obj(document: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TwinError("bad-reported", f"{key} must be an object")
    return value


def _enum(kind: type[_E], value: object, key: str) -> _E:
    try:
        return kind(value)
    except ValueError as exc:
        known = ", ".join(str(member.value) for member in kind)
        raise TwinError("bad-reported", f"{key} {value!r} is not one of {known}") from exc


def _result(document: dict[str, Any] | None) -> ResultReport | None:
    if document is None:
        return None
    code = _int(document, "code")
    return ResultReport(
        code if code is not None else 0,
        _str(document, "reason") or "",
        _str(document, "detail", limit=512) or "",
        _str(document, "step") or "",
    )


def _core(document: dict[str, Any]) -> CoreReport:
    model = _obj(document, "activeModel") or {}
    return CoreReport(
        _str(document, "firmwareVersion") or "unknown",
        _enum(CoreState, document.get("state"), "core state"),
        _str(document, "slot"),
        _str(model, "modelId"),
        _str(model, "version"),
        _str(model, "sha256"),
        _result(_obj(document, "lastResult")),
        _int(document, "activatedAtMs"),
        _int(document, "heartbeatAtMs"),
        _int(document, "inferences") or 0,
    )


def parse_reported(document: object) -> ReportedAgent:
    """The typed `tinyfleet.agent` value of a reported document (`ReportedAgent.to_json`).

    Raises:
        TwinError: `bad-reported` naming the field that is missing, mistyped or unknown.
    """
    if not isinstance(document, dict):
        raise TwinError("bad-reported", "the agent property must be an object")
    workflow = _obj(document, "workflow")
    phase = _obj(document, "phase") or {}
    cores = _obj(document, "cores") or {}
    if len(cores) > 16:
        raise TwinError("bad-reported", f"{len(cores)} cores is more than 16")
    action = None if workflow is None else workflow.get("action", int(WorkflowAction.DEPLOY))
    return ReportedAgent(
        agent_version=_str(document, "agentVersion") or "",
        profile=_str(document, "profile") or "",
        hardware_id=_str(document, "hardwareId") or "",
        state=_enum(AgentState, document.get("state"), "state"),
        workflow_action=None if action is None else _enum(WorkflowAction, action, "action"),
        workflow_id=None if workflow is None else _str(workflow, "id", limit=MAX_ID),
        installed_release=_str(document, "installedReleaseId"),
        last_result=_result(_obj(document, "lastResult")),
        cores={
            str(core): _core(report if isinstance(report, dict) else {})
            for core, report in cores.items()
        },
        phase=_enum(WorkflowPhase, phase.get("name", "idle"), "phase"),
        phase_workflow_id=_str(phase, "workflowId", limit=MAX_ID),
        phase_reason=_str(phase, "reason") or "",
    )


def _encode(patch: dict[str, Any]) -> bytes:
    data = json.dumps(patch, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_REPORTED_BYTES:
        raise TwinError("too-large", f"reported patch of {len(data)} bytes")
    return data


def agent_patch(agent: ReportedAgent) -> bytes:
    """A reported-properties patch carrying the agent's whole state."""
    return _encode({COMPONENT: {"__t": "c", "agent": agent.to_json()}})


def ack_patch(desired: DesiredService, code: int = 200, description: str = "") -> bytes:
    """The Plug and Play acknowledgement of the writable `service` property."""
    value = {"workflow": {"action": int(desired.action), "id": desired.workflow_id}}
    return _encode(
        {
            COMPONENT: {
                "__t": "c",
                "service": {
                    "value": value,
                    "ac": code,
                    "ad": description[:256],
                    "av": desired.version,
                },
            }
        }
    )
