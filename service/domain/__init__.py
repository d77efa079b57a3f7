"""The pure core of the service: rollout and device-job state machines, planning, schedules.

No I/O, no clock reads (time is a parameter), standard library only (plus `zoneinfo` and the pure
wire contract `device_agent.protocol`, through which device reports are read). The rollout engine
drives it: `rollout.decide(rollout, summary, now, events) -> Decision(rollout, commands)`,
`job_reports.observe`/`jobs.expire`/`jobs.apply` per device, `planner` for stages and offers; it
saves each decision with its commands in one transaction (the outbox). The design is explained in
`docs/decisions/0005-rollout-state-machine.md`. The health gates (`gates`, `rollups`, `stats`)
live here too and are imported by module name.
"""

from __future__ import annotations

from service.domain.commands import (
    Command,
    Notify,
    OfferRelease,
    RequestApproval,
    RevokeOffer,
    RevokeOffers,
    StartRollback,
    WriteDirector,
)
from service.domain.cron import CronExpression
from service.domain.errors import (
    ApprovalRequiredError,
    CronError,
    DomainError,
    InvalidTransitionError,
    PreconditionError,
    SpecError,
)
from service.domain.job_events import DeviceReport
from service.domain.jobs import Job, JobState
from service.domain.planner import Candidate, OfferLedger, StageFigures, StagePlan
from service.domain.rollout import Decision, JobsSummary, Rollout, RolloutState, decide
from service.domain.rollout_events import Verdict
from service.domain.spec import (
    Advance,
    FailureAction,
    FailurePolicy,
    IncreaseOn,
    RatePolicy,
    RetryPolicy,
    RolloutSpec,
    Stage,
    SuccessPolicy,
)
from service.domain.windows import MaintenanceWindow

__all__ = [
    "Advance",
    "ApprovalRequiredError",
    "Candidate",
    "Command",
    "CronError",
    "CronExpression",
    "Decision",
    "DeviceReport",
    "DomainError",
    "FailureAction",
    "FailurePolicy",
    "IncreaseOn",
    "InvalidTransitionError",
    "Job",
    "JobState",
    "JobsSummary",
    "MaintenanceWindow",
    "Notify",
    "OfferLedger",
    "OfferRelease",
    "PreconditionError",
    "RatePolicy",
    "RequestApproval",
    "RetryPolicy",
    "RevokeOffer",
    "RevokeOffers",
    "Rollout",
    "RolloutSpec",
    "RolloutState",
    "SpecError",
    "Stage",
    "StageFigures",
    "StagePlan",
    "StartRollback",
    "SuccessPolicy",
    "Verdict",
    "WriteDirector",
    "decide",
]
