"""The rollout state machine: one table of transitions, and `decide`, its single entry point.

    DRAFT ─Start─▶ SCHEDULED ─Tick(start_at)─▶ RUNNING ⇄ WAITING_WINDOW  (maintenance windows)
    RUNNING ─Tick(stage activated to the success threshold)─▶ SOAKING
    SOAKING ─Tick(soak over, threshold confirmed, gate PASS if required)─▶
            next stage: RUNNING | WAITING_WINDOW,  or AWAITING_APPROVAL ─Approve─▶ next stage,
            or COMPLETED after the last stage;   NextStage forces the advance from any of them
    failure threshold or a FAIL gate ─▶ PAUSED | ABORTED | ROLLING_BACK (spec.failure.action)
    a stalled stage ─▶ PAUSED | ABORTED | ROLLING_BACK (spec.deadlines.action)
    Pause ─▶ PAUSED ─Resume─▶ SCHEDULED | RUNNING | WAITING_WINDOW     Abort ─▶ ABORTED
    PAUSED ─NextStage─▶ the next stage (the operator moves past a stall)
    Rollback ─▶ ROLLING_BACK ─RollbackPlanned, Tick(every rollback job finished)─▶ ROLLED_BACK

The engine's loop, in one database transaction per rollout:

    budget = offer_budget(rollout, figures, now)           # how many candidates to load
    summary = JobsSummary(figures, rollback_figures, candidates[:budget])
    decision = decide(rollout, summary, now, events)       # pure
    save decision.rollout (version check), apply jobs.Offered for each OfferRelease, append
    decision.commands to the outbox; commit; then dispatch the outbox.

`events` are operator commands (Start, Approve, Pause, Resume, Abort, Rollback, NextStage),
health-gate results (`GateResult`) and `RollbackPlanned`; `decide` applies them in order and then a
`Tick`, which offers devices and moves the rollout on.

Invariants:
- Every (state, event) pair is listed in `TRANSITIONS` with the states it may lead to; any other
  pair raises `InvalidTransitionError` naming both, and a handler cannot leave its listed targets.
- A production rollout leaves DRAFT only with approvals from two distinct operators (the one who
  starts it counts); otherwise `ApprovalRequiredError`.
- No forward offer reaches a production device (`Candidate.production`, decided per device at
  every offer, whatever the spec says) without approvals from two distinct operators: the
  decision offers nothing, pauses the rollout (from COMPLETED too) and asks for approval; the
  jobs stay PENDING. Approve while PAUSED records an approver, and so does Resume.
- Offers (`WriteDirector` then `OfferRelease`, per device) are emitted only in RUNNING, SOAKING,
  AWAITING_APPROVAL, COMPLETED (to devices that joined the group later) and ROLLING_BACK; forward
  offers only while a maintenance window is open; each device at most once per decision; never
  more than the rate allows in any 60 seconds.
- The stage index only grows, and only by one step at a time; ROLLED_BACK is final, ABORTED
  can only go on to ROLLING_BACK, and COMPLETED only to ROLLING_BACK or (a production device
  joined without approval) PAUSED.
- Failures are counted over the stages started so far, from the last Resume on: Resume
  acknowledges the failures seen before it (so a paused rollout does not trip again at once).
- No stage waits for ever (DeadlinePolicy): a stage whose open devices (confirmed, soaking, in
  progress, pending) are fewer than its success threshold stalls at once; a soaking stage stalls
  once `deadlines.decide` has passed after its soak and confirm grace (or after the last Resume)
  without the confirmations or the PASS it needs. A stall takes `deadlines.action` and says what
  was missing in `reason` and a "stalled-<action>" notification.
- `decide` is deterministic: the same inputs give the same decision, so replaying after a crash
  before commit repeats exactly the same offers and commands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

from service.domain.commands import (
    Command,
    Notify,
    OfferRelease,
    RequestApproval,
    RevokeOffers,
    StartRollback,
    WriteDirector,
)
from service.domain.errors import ApprovalRequiredError, InvalidTransitionError, PreconditionError
from service.domain.jobs import workflow_id
from service.domain.planner import Candidate, OfferLedger, StageFigures, select_offers
from service.domain.rollout_events import (
    Abort,
    Approve,
    GateResult,
    NextStage,
    Pause,
    Resume,
    Rollback,
    RollbackPlanned,
    RolloutEvent,
    Start,
    Tick,
    Verdict,
)
from service.domain.spec import Advance, FailureAction, IncreaseOn, RolloutSpec
from service.domain.windows import window_open

__all__ = [
    "TRANSITIONS",
    "Decision",
    "JobsSummary",
    "Rollout",
    "RolloutState",
    "apply",
    "decide",
    "offer_budget",
]


class RolloutState(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    WAITING_WINDOW = "waiting_window"
    RUNNING = "running"
    SOAKING = "soaking"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


R = RolloutState
# COMPLETED keeps offering: a device that joins the group later gets the release (a completed
# rollout stays open to new members until superseded, like Azure Device Update deployments).
_OFFERING = frozenset({R.RUNNING, R.SOAKING, R.AWAITING_APPROVAL, R.COMPLETED})
_EMPTY = StageFigures({})


@dataclass(frozen=True)
class Rollout:
    """A rollout's whole state, saved by the engine as one row (with `version` for concurrency)."""

    spec: RolloutSpec
    state: RolloutState = RolloutState.DRAFT
    stage: int = 0
    approvals: frozenset[str] = frozenset()
    soak_until: datetime | None = None  # the current stage's soak end, once it is activated
    gate: Verdict | None = None  # the latest health verdict on the current stage
    ledger: OfferLedger = field(default_factory=OfferLedger)
    baseline_failed: int = 0
    baseline_finished: int = 0
    rollback_jobs: int | None = None  # set by RollbackPlanned
    reason: str = ""  # why it paused, aborted or rolled back
    started_at: datetime | None = None
    resumed_at: datetime | None = None  # restarts the stage's decide deadline
    version: int = 0


@dataclass(frozen=True)
class JobsSummary:
    """What the engine read about the rollout's jobs: figures per stage, the rollback's figures,
    and the PENDING jobs it may offer now (stages started, retry wait over), in offer order.
    The engine leaves out devices that have a live job in another rollout: only it sees them."""

    stages: tuple[StageFigures, ...]
    rollback: StageFigures = _EMPTY
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    commands: tuple[Command, ...]


_LIVE = frozenset({R.RUNNING, R.WAITING_WINDOW})
_ENTRY = _LIVE | {R.SCHEDULED}
_TRIPPED = frozenset({R.PAUSED, R.ABORTED, R.ROLLING_BACK})
_FORCED = _LIVE | {R.COMPLETED}
_ADVANCED = _FORCED | {R.AWAITING_APPROVAL}
_OPERATOR: Mapping[type[RolloutEvent], frozenset[RolloutState]] = {
    Pause: frozenset({R.PAUSED}),
    Abort: frozenset({R.ABORTED}),
    Rollback: frozenset({R.ROLLING_BACK}),
    NextStage: _FORCED,
}

# Rule (h11's): everything that decides which transitions exist lives in this table.
TRANSITIONS: Mapping[RolloutState, Mapping[type[RolloutEvent], frozenset[RolloutState]]] = {
    R.DRAFT: {
        Approve: frozenset({R.DRAFT}),
        Start: _ENTRY,
        Abort: frozenset({R.ABORTED}),
        Tick: frozenset({R.DRAFT}),
    },
    R.SCHEDULED: {
        Tick: _ENTRY,
        Pause: frozenset({R.PAUSED}),
        Abort: frozenset({R.ABORTED}),
    },
    R.WAITING_WINDOW: {
        **_OPERATOR,
        Tick: _LIVE | _TRIPPED | {R.SOAKING},
        GateResult: _TRIPPED | {R.WAITING_WINDOW},
    },
    R.RUNNING: {
        **_OPERATOR,
        Tick: _LIVE | _TRIPPED | {R.SOAKING},
        GateResult: _TRIPPED | {R.RUNNING},
    },
    R.SOAKING: {
        **_OPERATOR,
        Tick: _ADVANCED | _TRIPPED | {R.SOAKING},
        GateResult: _TRIPPED | {R.SOAKING},
    },
    R.AWAITING_APPROVAL: {
        **_OPERATOR,
        Approve: _FORCED,
        Tick: _TRIPPED | {R.AWAITING_APPROVAL},
        GateResult: _TRIPPED | {R.AWAITING_APPROVAL},
    },
    R.PAUSED: {
        Approve: frozenset({R.PAUSED}),
        Resume: _ENTRY,
        NextStage: _FORCED,
        Abort: frozenset({R.ABORTED}),
        Rollback: frozenset({R.ROLLING_BACK}),
        GateResult: frozenset({R.PAUSED}),
        Tick: frozenset({R.PAUSED}),
    },
    R.COMPLETED: {
        Rollback: frozenset({R.ROLLING_BACK}),
        Tick: frozenset({R.COMPLETED, R.PAUSED}),  # PAUSED: a production joiner needs approval
    },
    R.ABORTED: {Rollback: frozenset({R.ROLLING_BACK}), Tick: frozenset({R.ABORTED})},
    R.ROLLING_BACK: {
        RollbackPlanned: frozenset({R.ROLLING_BACK}),
        Abort: frozenset({R.ABORTED}),
        Tick: frozenset({R.ROLLING_BACK, R.ROLLED_BACK}),
    },
    R.ROLLED_BACK: {Tick: frozenset({R.ROLLED_BACK})},
}


# -- handlers: each returns the next rollout and its commands; `apply` checks the target --------

_Step: TypeAlias = tuple[Rollout, list[Command]]


def _notify(rollout: Rollout, kind: str, message: str) -> Notify:
    return Notify(rollout.spec.rollout_id, kind, message)


def _entry(rollout: Rollout, now: datetime) -> Rollout:
    """Where a started (or resumed) rollout goes: wait for start_at, for a window, or run."""
    spec = rollout.spec
    if spec.start_at is not None and now < spec.start_at:
        return replace(rollout, state=R.SCHEDULED)
    return replace(rollout, state=R.RUNNING if window_open(spec.windows, now) else R.WAITING_WINDOW)


def _started(rollout: Rollout, summary: JobsSummary) -> StageFigures:
    return sum(summary.stages[: rollout.stage + 1], _EMPTY)


def _trip(rollout: Rollout, action: FailureAction, reason: str, kind: str = "failure") -> _Step:
    rollout_id, previous = rollout.spec.rollout_id, rollout.spec.previous_release_id
    if action is FailureAction.ROLLBACK and previous is None:
        action, reason = FailureAction.PAUSE, f"{reason} (no previous release to roll back to)"
    notify = _notify(rollout, f"{kind}-{action.value}", reason)
    if action is FailureAction.PAUSE:
        return replace(rollout, state=R.PAUSED, reason=reason), [notify]
    if action is FailureAction.ABORT:
        aborted = replace(rollout, state=R.ABORTED, reason=reason)
        return aborted, [RevokeOffers(rollout_id, reason), notify]
    assert previous is not None
    rolling = replace(rollout, state=R.ROLLING_BACK, reason=reason, rollback_jobs=None)
    return rolling, [StartRollback(rollout_id, previous, reason), notify]


def _advance(rollout: Rollout, now: datetime, why: str) -> _Step:
    if rollout.stage + 1 >= len(rollout.spec.stages):
        return replace(rollout, state=R.COMPLETED), [_notify(rollout, "completed", why)]
    nxt = replace(rollout, stage=rollout.stage + 1, soak_until=None, gate=None, resumed_at=None)
    name = rollout.spec.stages[nxt.stage].name
    return _entry(nxt, now), [_notify(rollout, "stage-started", f"stage {name}: {why}")]


def _failure(rollout: Rollout, summary: JobsSummary) -> str | None:
    policy = rollout.spec.failure
    started = _started(rollout, summary)
    failed = max(0, started.failed - rollout.baseline_failed)
    finished = max(0, started.finished - rollout.baseline_finished)
    if finished >= policy.min_devices and failed * 100 > policy.threshold_percent * finished:
        return (
            f"{failed} of {finished} finished devices failed, over the "
            f"{policy.threshold_percent:g}% threshold"
        )
    return None


def _stalled(rollout: Rollout, stage: StageFigures, now: datetime) -> str | None:
    """Why the current stage can no longer succeed, or has waited past its decide deadline."""
    spec = rollout.spec
    name, needed = spec.stages[rollout.stage].name, spec.success.threshold_percent
    open_ = stage.confirmed + stage.soaking + stage.in_progress + stage.pending
    if stage.total and stage.percent(open_) < needed:
        return (
            f"stage {name} cannot succeed: {stage.confirmed} of {stage.total} devices confirmed "
            f"and {open_ - stage.confirmed} still open, {stage.failed} failed "
            f"(success needs {needed:g}% confirmed)"
        )
    if rollout.state is not R.SOAKING or rollout.soak_until is None:
        return None
    start = rollout.soak_until + spec.retry.confirm_grace
    if rollout.resumed_at is not None and rollout.resumed_at > start:
        start = rollout.resumed_at
    if now < start + spec.deadlines.decide:
        return None
    missing = []
    if stage.percent(stage.confirmed) < needed:
        missing.append(f"{stage.confirmed} of {stage.total} devices confirmed (needs {needed:g}%)")
    if spec.success.require_gate and rollout.gate is not Verdict.PASS:
        missing.append(f"health gate {rollout.gate.value if rollout.gate else 'not judged'}")
    if not missing:
        return None
    waited = int(spec.deadlines.decide.total_seconds())
    return f"stage {name} stalled {waited}s past its soak: " + "; ".join(missing)


def offer_budget(rollout: Rollout, stages: Sequence[StageFigures], now: datetime) -> int:
    """How many candidates the engine should load: the rate limit's room at `now` (0 when the
    rollout cannot offer). `decide` still checks the state and the windows."""
    spec = rollout.spec
    if rollout.state is R.ROLLING_BACK:
        rate = spec.rate.max_per_minute if rollout.rollback_jobs is not None else 0
    elif rollout.state in _OFFERING | _ENTRY:
        done = sum(
            s.notified if spec.rate.increase_on is IncreaseOn.NOTIFIED else s.confirmed
            for s in stages
        )
        rate = spec.rate.rate(done)
    else:
        rate = 0
    return rollout.ledger.budget(now, rate)


def _offer(rollout: Rollout, summary: JobsSummary, now: datetime) -> _Step:
    spec = rollout.spec
    if rollout.state is R.ROLLING_BACK:
        release = spec.previous_release_id
    elif rollout.state in _OFFERING and window_open(spec.windows, now):
        release = spec.release_id
    else:
        return rollout, []
    assert release is not None  # ROLLING_BACK is reached only with a previous release
    chosen = select_offers(summary.candidates, offer_budget(rollout, summary.stages, now))
    if rollout.state is not R.ROLLING_BACK and (held := _production_hold(rollout, chosen)):
        return held
    commands: list[Command] = []
    for candidate in chosen:
        wid = workflow_id(spec.rollout_id, release, candidate.next_attempt)
        commands.append(WriteDirector(candidate.device_id, release))
        commands.append(OfferRelease(spec.rollout_id, candidate.device_id, release, wid))
    return replace(rollout, ledger=rollout.ledger.record(now, len(chosen))), commands


def _production_hold(rollout: Rollout, chosen: Sequence[Candidate]) -> _Step | None:
    """The two-person rule at the offer: a device in a production group gets a release only
    once two distinct operators approved the rollout, whatever its group's flag said when it
    was created (the flag can change, and groups overlap). Otherwise offer nothing and pause."""
    if len(rollout.approvals) >= 2:
        return None
    production = sorted(c.device_id for c in chosen if c.production)
    if not production:
        return None
    shown = ", ".join(production[:3]) + (
        f" and {len(production) - 3} more" if len(production) > 3 else ""
    )
    reason = (
        f"production devices ({shown}) need approvals from 2 distinct operators; "
        f"has {', '.join(sorted(rollout.approvals)) or 'none'}: approve, then resume"
    )
    paused = replace(rollout, state=R.PAUSED, reason=reason)
    return paused, [
        RequestApproval(rollout.spec.rollout_id, rollout.stage, reason),
        _notify(rollout, "approval-required", reason),
    ]


def _tick(rollout: Rollout, event: Tick, summary: JobsSummary, now: datetime) -> _Step:
    spec, state = rollout.spec, rollout.state
    if state is R.SCHEDULED:
        return (
            _entry(rollout, now) if spec.start_at is None or now >= spec.start_at else rollout
        ), []
    if state is R.ROLLING_BACK:
        rolled, offers = _offer(rollout, summary, now)
        back = summary.rollback
        if (
            rolled.rollback_jobs is not None
            and not offers
            and back.pending + back.in_progress + back.soaking == 0
        ):
            done = (
                f"{back.confirmed} devices back on {spec.previous_release_id}, {back.failed} failed"
            )
            return replace(rolled, state=R.ROLLED_BACK), [_notify(rollout, "rolled-back", done)]
        return rolled, offers
    if state is R.COMPLETED:
        return _offer(rollout, summary, now)
    if state not in _OFFERING | _LIVE:
        return rollout, []
    if reason := _failure(rollout, summary):
        return _trip(rollout, spec.failure.action, reason)
    stage, success = summary.stages[rollout.stage], spec.success
    if state is not R.AWAITING_APPROVAL and (reason := _stalled(rollout, stage, now)):
        return _trip(rollout, spec.deadlines.action, reason, kind="stalled")
    commands: list[Command] = []
    if state in _LIVE:
        if stage.percent(stage.soaking + stage.confirmed) >= success.threshold_percent:
            soak = spec.stages[rollout.stage].soak if stage.total else timedelta(0)
            rollout = replace(rollout, state=R.SOAKING, soak_until=rollout.soak_until or now + soak)
        else:
            rollout = _entry(rollout, now)
    elif state is R.SOAKING:
        assert rollout.soak_until is not None
        if (
            now >= rollout.soak_until
            and stage.percent(stage.confirmed) >= success.threshold_percent
            and (not success.require_gate or rollout.gate is Verdict.PASS)
        ):
            last = rollout.stage + 1 >= len(spec.stages)
            if success.advance is Advance.APPROVAL and not last:
                why = f"stage {spec.stages[rollout.stage].name} succeeded; approve the next stage"
                rollout = replace(rollout, state=R.AWAITING_APPROVAL)
                commands.append(RequestApproval(spec.rollout_id, rollout.stage + 1, why))
            else:
                rollout, commands = _advance(rollout, now, "the previous stage succeeded")
    offered, offers = _offer(rollout, summary, now)
    return offered, [*commands, *offers]


def _start(rollout: Rollout, event: Start, summary: JobsSummary, now: datetime) -> _Step:
    approvers = rollout.approvals | {event.operator}
    needed = 2 if rollout.spec.production else 1
    if len(approvers) < needed:
        raise ApprovalRequiredError(
            rollout.state,
            "Start",
            f"a production rollout needs approvals from {needed} distinct operators; "
            f"has {', '.join(sorted(approvers))}",
        )
    started = replace(rollout, approvals=approvers, started_at=now)
    return _entry(started, now), [_notify(rollout, "started", f"started by {event.operator}")]


def _approve(rollout: Rollout, event: Approve, summary: JobsSummary, now: datetime) -> _Step:
    if rollout.state in (R.DRAFT, R.PAUSED):
        return replace(rollout, approvals=rollout.approvals | {event.operator}), []
    return _advance(rollout, now, f"approved by {event.operator}")


def _pause(rollout: Rollout, event: Pause, summary: JobsSummary, now: datetime) -> _Step:
    return replace(rollout, state=R.PAUSED, reason=event.reason), [
        _notify(rollout, "paused", f"{event.operator}: {event.reason}")
    ]


def _acknowledged(rollout: Rollout, summary: JobsSummary) -> Rollout:
    """The failures seen so far are known to the operator: count only later ones."""
    started = _started(rollout, summary)
    return replace(
        rollout, baseline_failed=started.failed, baseline_finished=started.finished, reason=""
    )


def _resume(rollout: Rollout, event: Resume, summary: JobsSummary, now: datetime) -> _Step:
    acknowledged = replace(
        _acknowledged(rollout, summary),
        approvals=rollout.approvals | {event.operator},  # as Start: the one who resumes counts
        resumed_at=now,
    )
    return _entry(acknowledged, now), [_notify(rollout, "resumed", f"by {event.operator}")]


def _abort(rollout: Rollout, event: Abort, summary: JobsSummary, now: datetime) -> _Step:
    reason = f"{event.operator}: {event.reason}"
    return replace(rollout, state=R.ABORTED, reason=reason), [
        RevokeOffers(rollout.spec.rollout_id, reason),
        _notify(rollout, "aborted", reason),
    ]


def _rollback(rollout: Rollout, event: Rollback, summary: JobsSummary, now: datetime) -> _Step:
    if rollout.spec.previous_release_id is None:
        raise PreconditionError(rollout.state, "Rollback", "the rollout has no previous release")
    return _trip(rollout, FailureAction.ROLLBACK, f"{event.operator}: {event.reason}")


def _next_stage(rollout: Rollout, event: NextStage, summary: JobsSummary, now: datetime) -> _Step:
    if rollout.state is R.PAUSED:  # moving past a stall: the failures seen so far are known
        rollout = _acknowledged(rollout, summary)
    return _advance(rollout, now, f"forced by {event.operator}")


def _gate(rollout: Rollout, event: GateResult, summary: JobsSummary, now: datetime) -> _Step:
    if event.stage != rollout.stage:
        return rollout, []  # a verdict on an earlier stage arrived late: it no longer applies
    judged = replace(rollout, gate=event.verdict)
    if event.verdict is not Verdict.FAIL or rollout.state is R.PAUSED:
        return judged, []
    numbers = ", ".join(f"{k}={v:g}" for k, v in sorted(event.numbers.items()))
    reason = f"health gate failed: {event.reason}" + (f" ({numbers})" if numbers else "")
    return _trip(judged, event.action or rollout.spec.failure.action, reason)


def _rollback_planned(
    rollout: Rollout, event: RollbackPlanned, summary: JobsSummary, now: datetime
) -> _Step:
    return replace(rollout, rollback_jobs=event.jobs), []


_HANDLERS: Mapping[type[RolloutEvent], Callable[..., _Step]] = {
    Start: _start,
    Approve: _approve,
    Pause: _pause,
    Resume: _resume,
    Abort: _abort,
    Rollback: _rollback,
    NextStage: _next_stage,
    GateResult: _gate,
    RollbackPlanned: _rollback_planned,
    Tick: _tick,
}


def apply(rollout: Rollout, event: RolloutEvent, summary: JobsSummary, now: datetime) -> Decision:
    """One event on the rollout. Prefer `decide`, which also ticks and bumps the version.

    Raises:
        InvalidTransitionError: the state does not take this event (refuse the request, 409).
        PreconditionError: a legal event whose precondition is missing (approvals, a previous
            release): tell the operator `reason`.
    """
    allowed = TRANSITIONS[rollout.state]
    targets = allowed.get(type(event))
    if targets is None:
        names = tuple(e.__name__ for e in allowed)
        raise InvalidTransitionError("rollout", rollout.state, type(event).__name__, names)
    new, commands = _HANDLERS[type(event)](rollout, event, summary, now)
    if new.state not in targets:
        raise InvalidTransitionError(
            "rollout", rollout.state, f"{event!r} -> {new.state}", tuple(sorted(targets))
        )
    return Decision(new, tuple(commands))


def decide(
    rollout: Rollout, summary: JobsSummary, now: datetime, events: Sequence[RolloutEvent] = ()
) -> Decision:
    """Apply `events` in order, then a Tick; the engine saves the result in one transaction.

    Raises:
        InvalidTransitionError, PreconditionError: as `apply`; nothing is changed (the caller
            drops the whole decision, so a refused command leaves no half-applied state).
    """
    if len(summary.stages) != len(rollout.spec.stages):
        raise PreconditionError(
            rollout.state,
            "decide",
            f"the summary has {len(summary.stages)} stages, the spec {len(rollout.spec.stages)}",
        )
    current, commands, offered = rollout, list[Command](), set[str]()
    for event in (*events, Tick()):
        remaining = tuple(c for c in summary.candidates if c.device_id not in offered)
        step = apply(current, event, replace(summary, candidates=remaining), now)
        offered.update(c.device_id for c in step.commands if isinstance(c, OfferRelease))
        current = step.rollout
        commands.extend(step.commands)
    if current != rollout or commands:
        current = replace(current, version=rollout.version + 1)
    return Decision(current, tuple(commands))
