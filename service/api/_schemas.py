"""The API's JSON shapes (pydantic), so the OpenAPI document describes every answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.api._inputs import INT64_MAX, AwareTime, JsonObject, Name, Text, check_name
from service.storage import GroupKind, Role

__all__ = [
    "AuditOut",
    "ChainOut",
    "CommandIn",
    "CoreOut",
    "DeviceOut",
    "GroupIn",
    "GroupOut",
    "HealthOut",
    "IssuedTokenOut",
    "Items",
    "JobOut",
    "MemberOut",
    "PageOut",
    "ReleaseIn",
    "ReleaseOut",
    "RolloutOut",
    "StageOut",
    "SyncOut",
    "TokenIn",
    "TokenOut",
]

T = TypeVar("T")
Selector = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(check_name)]
ReleaseId = Annotated[str, Field(min_length=1, max_length=48), AfterValidator(check_name)]


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_after: str | None = None


class Items(BaseModel, Generic[T]):
    items: list[T]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    storage: bool
    engine: bool
    releases: bool
    hub: bool
    telemetry: bool


# -- devices ------------------------------------------------------------------------------------


class CoreOut(BaseModel):
    core: str
    slot: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    state: str | None = None


class DeviceOut(BaseModel):
    id: str
    hardware_id: str
    profile: str
    agent_version: str
    tags: dict[str, str]
    reported: dict[str, Any]
    last_seen: datetime | None
    online: bool = Field(description="seen in the last 5 minutes, by the service's clock")
    created_at: datetime
    cores: list[CoreOut]
    release: str | None = Field(description="the installed release, as the device reports it")


class JobOut(BaseModel):
    rollout_id: str
    device_id: str
    release_id: str | None
    stage: int
    state: str
    reason: str | None
    attempts: int
    updated_at: datetime


class SyncOut(BaseModel):
    synced: int


# -- groups -------------------------------------------------------------------------------------


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: GroupKind
    selector: Selector
    time_zone: Name = "UTC"
    production: bool = False


class GroupOut(BaseModel):
    id: str
    name: str
    kind: GroupKind
    selector: str
    time_zone: str
    production: bool
    members: int


# -- releases -----------------------------------------------------------------------------------


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ReleaseId
    hardware_ids: list[Name] = Field(min_length=1, max_length=64)
    counter: int = Field(ge=0, le=INT64_MAX)
    description: Text = Field(default="", max_length=2000)


class AdmissionOut(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class MemberOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    core: str
    path: str | None = None
    kind: str | None = None
    model_id: str | None = None
    version: str | None = None
    length: int | None = None
    sha256: str | None = None
    admission: list[AdmissionOut] | None = None


class ReleaseOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: Literal["draft", "published"]
    counter: int
    hardware_ids: list[str]
    members: list[MemberOut]
    created_at: datetime | None = None
    created_by: str | None = None
    description: str | None = None


# -- rollouts -----------------------------------------------------------------------------------


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    percent: float | None = None
    count: int | None = None
    soak_seconds: float = Field(default=0, ge=0)
    gate: JsonObject | None = None


class SuccessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold_percent: float = 100.0
    advance: Literal["auto", "approval"] = "auto"
    # Gates are on by default: true whenever the rollout has a gate (false with "gate": "none").
    require_gate: bool = Field(
        default=True, description='Wait for a PASS health verdict; false with "gate": "none".'
    )


class FailureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold_percent: float = 10.0
    min_devices: int = 1
    action: Literal["pause", "abort", "rollback"] = "pause"


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_progress_timeout_seconds: float = 3600
    confirm_grace_seconds: float = 3600
    max_retries: int = 2
    backoff_base_seconds: float = 60
    backoff_cap_seconds: float = 6 * 3600
    offer_timeout_seconds: float = 86400
    # A core whose last reported heartbeat is older than this is not alive (>= 3 heartbeats
    # and the agent's liveness report interval).
    core_silence_seconds: float = 15


class RateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_per_minute: int = 100
    factor: float = 1.0
    every: int = 1000
    increase_on: Literal["notified", "succeeded"] = "succeeded"
    max_per_minute: int = 1000


class DeadlinesIn(BaseModel):
    """No stage waits for ever: after its soak and confirm grace, a stage has `decide_seconds`
    to get its confirmations and PASS; then (or at once, when it can no longer succeed) the
    rollout takes `action`."""

    model_config = ConfigDict(extra="forbid")

    decide_seconds: float = 3600
    action: Literal["pause", "abort", "rollback"] = "pause"


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: Name
    duration_minutes: float = Field(gt=0)


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Name
    release_id: ReleaseId
    group_id: Name
    previous_release_id: ReleaseId | None = None
    stages: list[StageIn] = Field(min_length=1, max_length=100)
    success: SuccessIn = Field(default_factory=SuccessIn)
    failure: FailureIn = Field(default_factory=FailureIn)
    retry: RetryIn = Field(default_factory=RetryIn)
    rate: RateIn = Field(default_factory=RateIn)
    deadlines: DeadlinesIn = Field(default_factory=DeadlinesIn)
    start_at: AwareTime | None = None
    windows: list[WindowIn] = Field(default_factory=list, max_length=100)
    gate: JsonObject | Literal["none"] | None = Field(
        default=None,
        description='The health gate policy; omitted: the default gate; "none": no gate.',
    )


Command = Literal["start", "pause", "resume", "abort", "rollback", "approve", "next-stage"]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: Command
    reason: Text | None = Field(default=None, max_length=500)


class GateOut(BaseModel):
    verdict: str
    reason: str = ""
    numbers: dict[str, float] = Field(default_factory=dict)


class StageGateOut(GateOut):
    """The verdict that decided the stage: `decided` is "advanced" (a PASS it went on with) or
    "tripped" (a FAIL that stopped it); `cohorts` the sizes it was judged on (canary_devices,
    control_devices, canary_inferences, control_inferences, stage_devices, stage_soaked)."""

    cohorts: dict[str, float] = Field(default_factory=dict)
    decided: str
    required: bool = True
    at: datetime | None = None


class StageOut(BaseModel):
    index: int
    name: str
    state: str
    planned: int
    started_at: datetime | None
    ended_at: datetime | None
    counts: dict[str, int]
    gate: StageGateOut | None = None


class RolloutOut(BaseModel):
    id: str
    release_id: str
    previous_release_id: str | None
    group_id: str
    state: str
    stage: int
    reason: str
    created_at: datetime
    updated_at: datetime
    approvals: list[str]
    spec: dict[str, Any]
    stages: list[StageOut]
    totals: dict[str, int]
    rollback: dict[str, int] = Field(
        default_factory=dict,
        description="job counts by state of the rollback to previous_release_id (all stages)",
    )
    gate: GateOut | None


# -- audit and tokens ---------------------------------------------------------------------------


class AuditOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    hash: str


class ChainOut(BaseModel):
    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str | None


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    role: Role


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


class IssuedTokenOut(BaseModel):
    id: str
    name: str
    role: Role
    secret: str
