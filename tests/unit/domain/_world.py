"""Builders shared by the rollout tests: specs, rollouts in any state, job summaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from service.domain.jobs import JobState
from service.domain.planner import Candidate, StageFigures
from service.domain.rollout import JobsSummary, Rollout, RolloutState
from service.domain.spec import (
    Advance,
    DeadlinePolicy,
    FailureAction,
    FailurePolicy,
    RatePolicy,
    RolloutSpec,
    Stage,
    SuccessPolicy,
)
from service.domain.windows import MaintenanceWindow

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
OPEN = (MaintenanceWindow.parse("0 12 * * *", timedelta(hours=1), "UTC"),)  # open at T0
CLOSED = (MaintenanceWindow.parse("0 3 * * *", timedelta(hours=1), "UTC"),)  # closed at T0


def spec(
    *,
    windows: tuple[MaintenanceWindow, ...] = (),
    production: bool = False,
    advance: Advance = Advance.AUTO,
    action: FailureAction = FailureAction.PAUSE,
    start_at: datetime | None = None,
    require_gate: bool = False,
    previous: str | None = "rel-1",
    rate: int = 10,
    stages: tuple[Stage, ...] | None = None,
    deadline_action: FailureAction = FailureAction.PAUSE,
    threshold: float = 100,
) -> RolloutSpec:
    return RolloutSpec(
        rollout_id="r1",
        release_id="rel-2",
        group_id="g1",
        previous_release_id=previous,
        production=production,
        stages=stages
        or (
            Stage("canary", count=2, soak=timedelta(hours=1)),
            Stage("rest", percent=100, soak=timedelta(hours=1)),
        ),
        success=SuccessPolicy(threshold, advance, require_gate),
        failure=FailurePolicy(10, 2, action),
        rate=RatePolicy(base_per_minute=rate, max_per_minute=rate),
        start_at=start_at,
        windows=windows,
        deadlines=DeadlinePolicy(action=deadline_action),
    )


def rollout(state: RolloutState, stage: int = 0, **spec_args: Any) -> Rollout:
    fields: dict[str, Any] = {}
    if state in (RolloutState.SOAKING, RolloutState.AWAITING_APPROVAL):
        fields["soak_until"] = T0 - timedelta(minutes=1)
    if state is RolloutState.ROLLING_BACK:
        fields["rollback_jobs"] = 3
    return replace(Rollout(spec(**spec_args)), state=state, stage=stage, **fields)


def figures(**counts: int) -> StageFigures:
    return StageFigures({JobState(k): v for k, v in counts.items() if v})


def summary(
    stage0: StageFigures | None = None,
    stage1: StageFigures | None = None,
    rollback: StageFigures | None = None,
    candidates: tuple[str, ...] = (),
    production: frozenset[str] = frozenset(),
) -> JobsSummary:
    """`production`: the candidates the engine found in a production group."""
    return JobsSummary(
        (stage0 or figures(pending=2), stage1 or figures(pending=10)),
        rollback or figures(),
        tuple(Candidate(device, 1, device in production) for device in candidates),
    )


QUIET = summary()
SETTLED = summary(figures(soaking=2))
SUCCEEDED = summary(figures(confirmed=2))
FAILING = summary(figures(confirmed=1, failed=1))
ROLLBACK_DONE = summary(rollback=figures(confirmed=2, failed=1))
ROLLBACK_BUSY = summary(rollback=figures(pending=1, confirmed=2))
