"""The rollout machine: every listed transition and target, every illegal pair, and `decide`."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from service.domain.commands import (
    Notify,
    OfferRelease,
    RequestApproval,
    RevokeOffers,
    StartRollback,
    WriteDirector,
)
from service.domain.errors import (
    ApprovalRequiredError,
    InvalidTransitionError,
    PreconditionError,
)
from service.domain.rollout import TRANSITIONS, JobsSummary, Rollout, RolloutState, apply, decide
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
from service.domain.spec import Advance, FailureAction, IncreaseOn, RatePolicy

from ._world import (
    CLOSED,
    FAILING,
    OPEN,
    QUIET,
    ROLLBACK_BUSY,
    ROLLBACK_DONE,
    SETTLED,
    SUCCEEDED,
    T0,
    figures,
    rollout,
    summary,
)

R = RolloutState
PAUSE, ABORT, ROLLBACK = FailureAction.PAUSE, FailureAction.ABORT, FailureAction.ROLLBACK
FAIL = GateResult(0, Verdict.FAIL, "confidence dropped", {"drop": 0.08})
LATER = T0 + timedelta(hours=2)
_TRIP = {
    PAUSE: (R.PAUSED, [Notify]),
    ABORT: (R.ABORTED, [RevokeOffers, Notify]),
    ROLLBACK: (R.ROLLING_BACK, [StartRollback, Notify]),
}


def _row(
    name: str,
    state: R,
    event: RolloutEvent,
    expected: R,
    commands: list[type],
    jobs: JobsSummary = QUIET,
    stage: int = 0,
    **spec_args: Any,
) -> tuple[str, Rollout, RolloutEvent, JobsSummary, R, list[type]]:
    return (name, rollout(state, stage, **spec_args), event, jobs, expected, commands)


ROWS = [
    _row("draft-approve", R.DRAFT, Approve("bob"), R.DRAFT, []),
    _row("draft-start-now", R.DRAFT, Start("ann"), R.RUNNING, [Notify]),
    _row("draft-start-later", R.DRAFT, Start("ann"), R.SCHEDULED, [Notify], start_at=LATER),
    _row(
        "draft-start-no-window", R.DRAFT, Start("ann"), R.WAITING_WINDOW, [Notify], windows=CLOSED
    ),
    _row("draft-abort", R.DRAFT, Abort("ann"), R.ABORTED, [RevokeOffers, Notify]),
    _row("draft-tick", R.DRAFT, Tick(), R.DRAFT, []),
    _row("scheduled-tick-early", R.SCHEDULED, Tick(), R.SCHEDULED, [], start_at=LATER),
    _row("scheduled-tick-due", R.SCHEDULED, Tick(), R.RUNNING, [], start_at=T0),
    _row("scheduled-due-no-window", R.SCHEDULED, Tick(), R.WAITING_WINDOW, [], windows=CLOSED),
    _row("scheduled-pause", R.SCHEDULED, Pause("ann"), R.PAUSED, [Notify]),
    _row("scheduled-abort", R.SCHEDULED, Abort("ann"), R.ABORTED, [RevokeOffers, Notify]),
    _row("paused-resume-running", R.PAUSED, Resume("ann"), R.RUNNING, [Notify]),
    _row(
        "paused-resume-window", R.PAUSED, Resume("ann"), R.WAITING_WINDOW, [Notify], windows=CLOSED
    ),
    _row("paused-resume-scheduled", R.PAUSED, Resume("ann"), R.SCHEDULED, [Notify], start_at=LATER),
    _row("paused-abort", R.PAUSED, Abort("ann"), R.ABORTED, [RevokeOffers, Notify]),
    _row("paused-rollback", R.PAUSED, Rollback("ann"), R.ROLLING_BACK, [StartRollback, Notify]),
    _row("paused-gate-recorded", R.PAUSED, FAIL, R.PAUSED, []),
    _row("paused-tick", R.PAUSED, Tick(), R.PAUSED, []),
    _row("paused-approve", R.PAUSED, Approve("bob"), R.PAUSED, []),
    _row("paused-force-next", R.PAUSED, NextStage("ann"), R.RUNNING, [Notify]),
    _row(
        "paused-force-next-no-window",
        R.PAUSED,
        NextStage("ann"),
        R.WAITING_WINDOW,
        [Notify],
        windows=CLOSED,
    ),
    _row("paused-force-last", R.PAUSED, NextStage("ann"), R.COMPLETED, [Notify], stage=1),
    _row(
        "completed-rollback", R.COMPLETED, Rollback("ann"), R.ROLLING_BACK, [StartRollback, Notify]
    ),
    _row("completed-tick", R.COMPLETED, Tick(), R.COMPLETED, []),
    _row(
        "completed-production-joiner",
        R.COMPLETED,
        Tick(),
        R.PAUSED,
        [RequestApproval, Notify],
        summary(candidates=("d9",), production=frozenset({"d9"})),
    ),
    _row("aborted-rollback", R.ABORTED, Rollback("ann"), R.ROLLING_BACK, [StartRollback, Notify]),
    _row("aborted-tick", R.ABORTED, Tick(), R.ABORTED, []),
    _row("rolling-back-planned", R.ROLLING_BACK, RollbackPlanned(3), R.ROLLING_BACK, []),
    _row("rolling-back-abort", R.ROLLING_BACK, Abort("ann"), R.ABORTED, [RevokeOffers, Notify]),
    _row("rolling-back-busy", R.ROLLING_BACK, Tick(), R.ROLLING_BACK, [], ROLLBACK_BUSY),
    _row("rolling-back-done", R.ROLLING_BACK, Tick(), R.ROLLED_BACK, [Notify], ROLLBACK_DONE),
    _row("rolled-back-tick", R.ROLLED_BACK, Tick(), R.ROLLED_BACK, []),
    # soaking: the stage's soak is over (soak_until = T0 - 1 minute)
    _row("soaking-wait-confirms", R.SOAKING, Tick(), R.SOAKING, [], SETTLED),
    _row("soaking-next-stage", R.SOAKING, Tick(), R.RUNNING, [Notify], SUCCEEDED),
    _row(
        "soaking-next-no-window",
        R.SOAKING,
        Tick(),
        R.WAITING_WINDOW,
        [Notify],
        SUCCEEDED,
        windows=CLOSED,
    ),
    _row(
        "soaking-approval",
        R.SOAKING,
        Tick(),
        R.AWAITING_APPROVAL,
        [RequestApproval],
        SUCCEEDED,
        advance=Advance.APPROVAL,
    ),
    _row(
        "soaking-last-completed",
        R.SOAKING,
        Tick(),
        R.COMPLETED,
        [Notify],
        summary(stage1=figures(confirmed=10)),
        stage=1,
    ),
    _row("awaiting-tick", R.AWAITING_APPROVAL, Tick(), R.AWAITING_APPROVAL, [], SUCCEEDED),
    _row("awaiting-approve", R.AWAITING_APPROVAL, Approve("bob"), R.RUNNING, [Notify], SUCCEEDED),
    _row(
        "awaiting-approve-no-window",
        R.AWAITING_APPROVAL,
        Approve("bob"),
        R.WAITING_WINDOW,
        [Notify],
        SUCCEEDED,
        windows=CLOSED,
    ),
    _row(
        "awaiting-approve-last", R.AWAITING_APPROVAL, Approve("bob"), R.COMPLETED, [Notify], stage=1
    ),
    _row("running-settled", R.RUNNING, Tick(), R.SOAKING, [], SETTLED),
    _row("running-window-closes", R.RUNNING, Tick(), R.WAITING_WINDOW, [], windows=CLOSED),
    _row("running-keeps-running", R.RUNNING, Tick(), R.RUNNING, []),
    _row("waiting-window-opens", R.WAITING_WINDOW, Tick(), R.RUNNING, [], windows=OPEN),
    _row("waiting-still-closed", R.WAITING_WINDOW, Tick(), R.WAITING_WINDOW, [], windows=CLOSED),
    _row("waiting-settled", R.WAITING_WINDOW, Tick(), R.SOAKING, [], SETTLED, windows=CLOSED),
]
_ACTIVE = (R.WAITING_WINDOW, R.RUNNING, R.SOAKING, R.AWAITING_APPROVAL)
for state in _ACTIVE:
    name = state.value.replace("_", "-")
    ROWS += [
        _row(f"{name}-pause", state, Pause("ann"), R.PAUSED, [Notify]),
        _row(f"{name}-abort", state, Abort("ann"), R.ABORTED, [RevokeOffers, Notify]),
        _row(f"{name}-rollback", state, Rollback("ann"), R.ROLLING_BACK, [StartRollback, Notify]),
        _row(f"{name}-force-next", state, NextStage("ann"), R.RUNNING, [Notify]),
        _row(
            f"{name}-force-next-no-window",
            state,
            NextStage("ann"),
            R.WAITING_WINDOW,
            [Notify],
            windows=CLOSED,
        ),
        _row(f"{name}-force-last", state, NextStage("ann"), R.COMPLETED, [Notify], stage=1),
        _row(
            f"{name}-gate-pass",
            state,
            GateResult(0, Verdict.PASS),
            state,
            [],
            windows=CLOSED if state is R.WAITING_WINDOW else (),
        ),
    ]
    for action, (target, commands) in _TRIP.items():
        ROWS += [
            _row(
                f"{name}-threshold-{action.value}",
                state,
                Tick(),
                target,
                commands,
                FAILING,
                action=action,
            ),
            _row(f"{name}-gate-fail-{action.value}", state, FAIL, target, commands, action=action),
        ]
        if state is not R.AWAITING_APPROVAL:  # 1 of 11 failed: under the failure threshold,
            ROWS.append(  # but 100% confirmed can no longer be reached
                _row(
                    f"{name}-cannot-succeed-{action.value}",
                    state,
                    Tick(),
                    target,
                    commands,
                    summary(figures(confirmed=10, failed=1)),
                    deadline_action=action,
                )
            )


@pytest.mark.parametrize(
    ("before", "event", "jobs", "expected", "commands"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_legal_transition(
    before: Rollout, event: RolloutEvent, jobs: JobsSummary, expected: R, commands: list[type]
) -> None:
    decision = apply(before, event, jobs, T0)
    assert decision.rollout.state is expected
    assert [type(c) for c in decision.commands] == commands


def test_the_rows_cover_every_listed_transition_and_target() -> None:
    covered = {(row[1].state, type(row[2]), row[4]) for row in ROWS}
    listed = {
        (state, event, target)
        for state, events in TRANSITIONS.items()
        for event, targets in events.items()
        for target in targets
    }
    assert listed - covered == set()


ALL_EVENTS: list[RolloutEvent] = [
    Start("ann"),
    Approve("bob"),
    Pause("ann"),
    Resume("ann"),
    Abort("ann"),
    Rollback("ann"),
    NextStage("ann"),
    GateResult(0, Verdict.PASS),
    RollbackPlanned(1),
    Tick(),
]
ILLEGAL = [(s, e) for s in R for e in ALL_EVENTS if type(e) not in TRANSITIONS[s]]


@pytest.mark.parametrize(
    ("state", "event"),
    ILLEGAL,
    ids=[f"{s.value}-{type(e).__name__}" for s, e in ILLEGAL],
)
def test_illegal_transition_names_state_and_event(state: R, event: RolloutEvent) -> None:
    with pytest.raises(InvalidTransitionError) as caught:
        apply(rollout(state), event, QUIET, T0)
    assert caught.value.state == state and caught.value.event == type(event).__name__
    assert state.value in str(caught.value)


# -- guards -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approvals", "starter"),
    [((), "ann"), (("ann",), "ann"), (("ann", "ann"), "ann")],
    ids=["nobody-else", "self-approval", "same-operator-twice"],
)
def test_production_start_needs_two_distinct_operators(
    approvals: tuple[str, ...], starter: str
) -> None:
    draft = rollout(R.DRAFT, production=True)
    for operator in approvals:
        draft = apply(draft, Approve(operator), QUIET, T0).rollout
    with pytest.raises(ApprovalRequiredError, match="2 distinct operators"):
        apply(draft, Start(starter), QUIET, T0)


def test_production_start_with_a_second_approver() -> None:
    draft = apply(rollout(R.DRAFT, production=True), Approve("bob"), QUIET, T0).rollout
    started = apply(draft, Start("ann"), QUIET, T0).rollout
    assert started.state is R.RUNNING and started.approvals == {"ann", "bob"}


def test_rollback_needs_a_previous_release() -> None:
    with pytest.raises(PreconditionError, match="previous release"):
        apply(rollout(R.RUNNING, previous=None), Rollback("ann"), QUIET, T0)


def test_failure_rollback_without_previous_release_pauses() -> None:
    # A gate may ask for a rollback the spec cannot do: pause instead, and say why.
    gate = replace(FAIL, action=FailureAction.ROLLBACK)
    decision = apply(rollout(R.RUNNING, previous=None), gate, QUIET, T0)
    assert decision.rollout.state is R.PAUSED
    assert "no previous release" in decision.rollout.reason


def test_late_verdict_on_an_earlier_stage_is_ignored() -> None:
    running = rollout(R.RUNNING, stage=1)
    assert apply(running, FAIL, QUIET, T0).rollout == running


def test_required_gate_holds_the_stage_until_pass() -> None:
    soaking = rollout(R.SOAKING, require_gate=True)
    assert apply(soaking, Tick(), SUCCEEDED, T0).rollout.state is R.SOAKING
    passed = apply(soaking, GateResult(0, Verdict.PASS), SUCCEEDED, T0).rollout
    assert apply(passed, Tick(), SUCCEEDED, T0).rollout.state is R.RUNNING


def test_soak_must_elapse_before_advancing() -> None:
    soaking = replace(rollout(R.SOAKING), soak_until=T0 + timedelta(seconds=1))
    assert apply(soaking, Tick(), SUCCEEDED, T0).rollout.state is R.SOAKING


def test_resume_acknowledges_earlier_failures() -> None:
    # success at 50%: the stage can still succeed, so only the failure threshold can trip it
    paused = apply(rollout(R.RUNNING, threshold=50), Tick(), FAILING, T0).rollout
    assert paused.state is R.PAUSED
    resumed = apply(paused, Resume("ann"), FAILING, T0).rollout
    assert apply(resumed, Tick(), FAILING, T0).rollout.state is R.SOAKING
    worse = summary(figures(confirmed=3, failed=3))
    assert apply(resumed, Tick(), worse, T0).rollout.state is R.PAUSED


def test_failures_below_the_minimum_device_count_do_not_trip() -> None:
    one_failure = summary(figures(failed=1, pending=1))
    running = rollout(R.RUNNING, threshold=50)
    assert apply(running, Tick(), one_failure, T0).rollout.state is R.RUNNING


# -- stalls: no stage waits for ever -------------------------------------------------------------


def test_a_stage_that_cannot_reach_its_threshold_stalls_at_once_and_says_why() -> None:
    # One failed device, under the failure threshold's minimum: before, the stage ran for ever.
    one_failure = summary(figures(failed=1, pending=1))
    decision = apply(rollout(R.RUNNING), Tick(), one_failure, T0)
    assert decision.rollout.state is R.PAUSED
    assert decision.rollout.reason.startswith("stage canary cannot succeed: 0 of 2 devices")
    assert [c.kind for c in decision.commands if isinstance(c, Notify)] == ["stalled-pause"]


def test_a_soak_waiting_on_silent_devices_stalls_after_the_decide_deadline() -> None:
    # One device never confirms: its job would time out, but the stage must not wait on it.
    waiting = summary(figures(confirmed=1, soaking=1))
    soaking = rollout(R.SOAKING)  # soak ended a minute before T0; grace and decide: 1 h each
    due = T0 - timedelta(minutes=1) + timedelta(hours=2)
    assert apply(soaking, Tick(), waiting, due - timedelta(seconds=1)).rollout.state is R.SOAKING
    stalled = apply(soaking, Tick(), waiting, due).rollout
    assert stalled.state is R.PAUSED
    assert "stage canary stalled" in stalled.reason and "1 of 2 devices confirmed" in stalled.reason


def test_a_gate_that_only_waits_stalls_after_the_decide_deadline() -> None:
    soaking = replace(rollout(R.SOAKING, require_gate=True), gate=Verdict.WAIT)
    late = T0 + timedelta(hours=2)
    stalled = apply(soaking, Tick(), SUCCEEDED, late).rollout
    assert stalled.state is R.PAUSED and "health gate wait" in stalled.reason
    passed = apply(soaking, GateResult(0, Verdict.PASS), SUCCEEDED, late).rollout
    assert apply(passed, Tick(), SUCCEEDED, late).rollout.state is R.RUNNING


@pytest.mark.parametrize("action", [PAUSE, ABORT, ROLLBACK], ids=lambda a: a.value)
def test_a_stall_takes_the_specs_deadline_action(action: FailureAction) -> None:
    one_failure = summary(figures(failed=1, pending=1))
    decision = apply(rollout(R.RUNNING, deadline_action=action), Tick(), one_failure, T0)
    target, commands = _TRIP[action]
    assert decision.rollout.state is target
    assert [type(c) for c in decision.commands] == commands


def test_resume_restarts_the_decide_deadline_and_next_stage_moves_past_a_stall() -> None:
    waiting = summary(figures(confirmed=1, soaking=1))
    late = T0 + timedelta(hours=3)
    stalled = apply(rollout(R.SOAKING), Tick(), waiting, late).rollout
    resumed = apply(stalled, Resume("ann"), waiting, late).rollout
    assert resumed.resumed_at == late
    soaking = replace(resumed, state=R.SOAKING)  # what the resumed stage's next tick finds
    assert apply(soaking, Tick(), waiting, late + timedelta(minutes=59)).rollout.state is R.SOAKING
    assert apply(soaking, Tick(), waiting, late + timedelta(hours=1)).rollout.state is R.PAUSED
    forced = apply(stalled, NextStage("ann"), waiting, late).rollout
    assert forced.stage == 1 and forced.state is R.RUNNING and forced.reason == ""


def test_rollback_waits_for_the_engine_to_plan_it() -> None:
    started = apply(rollout(R.RUNNING), Rollback("ann"), QUIET, T0).rollout
    assert started.rollback_jobs is None
    assert apply(started, Tick(), summary(), T0).rollout.state is R.ROLLING_BACK
    planned = apply(started, RollbackPlanned(0), summary(), T0).rollout
    assert apply(planned, Tick(), summary(), T0).rollout.state is R.ROLLED_BACK


# -- decide -------------------------------------------------------------------------------------


def test_decide_offers_director_first_then_the_workflow() -> None:
    decision = decide(rollout(R.RUNNING), summary(candidates=("d1", "d2")), T0)
    assert decision.commands == (
        WriteDirector("d1", "rel-2"),
        OfferRelease("r1", "d1", "rel-2", "r1.rel-2.1"),
        WriteDirector("d2", "rel-2"),
        OfferRelease("r1", "d2", "rel-2", "r1.rel-2.1"),
    )
    assert decision.rollout.version == 1
    assert decision.rollout.ledger.used(T0) == 2


def test_decide_respects_the_rate_limit_across_calls() -> None:
    candidates = tuple(f"d{i}" for i in range(25))
    first = decide(rollout(R.RUNNING, rate=10), summary(candidates=candidates), T0)
    offers = [c for c in first.commands if isinstance(c, OfferRelease)]
    assert len(offers) == 10
    second = decide(first.rollout, summary(candidates=candidates[10:]), T0 + timedelta(seconds=59))
    assert not [c for c in second.commands if isinstance(c, OfferRelease)]
    third = decide(first.rollout, summary(candidates=candidates[10:]), T0 + timedelta(seconds=61))
    assert len([c for c in third.commands if isinstance(c, OfferRelease)]) == 10


def test_decide_offers_nothing_outside_windows() -> None:
    decision = decide(rollout(R.RUNNING, windows=CLOSED), summary(candidates=("d1",)), T0)
    assert decision.rollout.state is R.WAITING_WINDOW and decision.commands == ()


def test_decide_applies_events_then_ticks_and_never_offers_twice() -> None:
    decision = decide(
        rollout(R.DRAFT),
        summary(candidates=("d1", "d1", "d2")),
        T0,
        [Approve("bob"), Start("ann")],
    )
    offered = [c.device_id for c in decision.commands if isinstance(c, OfferRelease)]
    assert decision.rollout.state is R.RUNNING and offered == ["d1", "d2"]


def test_decide_rolling_back_offers_the_previous_release_ignoring_windows() -> None:
    rolling = rollout(R.ROLLING_BACK, windows=CLOSED)
    decision = decide(rolling, summary(rollback=figures(pending=1), candidates=("d1",)), T0)
    assert decision.commands[:2] == (
        WriteDirector("d1", "rel-1"),
        OfferRelease("r1", "d1", "rel-1", "r1.rel-1.1"),
    )


def test_decide_leaves_the_version_alone_when_nothing_changes() -> None:
    draft = rollout(R.DRAFT)
    assert decide(draft, QUIET, T0).rollout is draft


def test_decide_refuses_a_summary_of_the_wrong_shape() -> None:
    with pytest.raises(PreconditionError, match="stages"):
        decide(rollout(R.RUNNING), JobsSummary((figures(),)), T0)


def test_decide_is_all_or_nothing() -> None:
    with pytest.raises(InvalidTransitionError):
        decide(rollout(R.RUNNING), QUIET, T0, [Pause("ann"), Pause("ann")])


def test_empty_stage_does_not_soak() -> None:
    empty = summary(figures(), figures(pending=3))
    soaking = decide(rollout(R.RUNNING), empty, T0).rollout
    assert soaking.state is R.SOAKING and soaking.soak_until == T0
    assert decide(soaking, empty, T0).rollout.stage == 1


def test_rate_grows_with_succeeded_devices() -> None:
    running = replace(
        rollout(R.RUNNING),
        spec=replace(
            rollout(R.RUNNING).spec,
            rate=RatePolicy(2, 2.0, 2, IncreaseOn.SUCCEEDED, 8),
        ),
    )
    many = tuple(f"d{i}" for i in range(20))
    slow = decide(running, summary(figures(pending=20), candidates=many), T0)
    assert len([c for c in slow.commands if isinstance(c, OfferRelease)]) == 2
    grown = summary(figures(pending=16), figures(confirmed=4), candidates=many)
    fast = decide(running, grown, T0)
    assert len([c for c in fast.commands if isinstance(c, OfferRelease)]) == 8  # 2 * 2**2


def test_a_completed_rollout_offers_devices_that_join_later() -> None:
    done = rollout(R.COMPLETED, stage=1)
    decision = decide(done, summary(candidates=("joiner",)), T0)
    assert decision.rollout.state is R.COMPLETED
    assert [type(c) for c in decision.commands] == [WriteDirector, OfferRelease]
    closed = rollout(R.COMPLETED, windows=CLOSED)
    assert decide(closed, summary(candidates=("j",)), T0).commands == ()
