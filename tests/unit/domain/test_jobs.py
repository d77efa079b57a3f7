"""The device job machine: every transition, every illegal pair, and the twin-report rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_agent.protocol import AgentState, CoreState, TwinError, WorkflowPhase
from service.domain.commands import RevokeOffer
from service.domain.errors import InvalidTransitionError
from service.domain.job_events import (
    Activated,
    Cancel,
    Confirmed,
    CoreHealth,
    Deadline,
    DeviceReport,
    Failed,
    HealthFailed,
    JobEvent,
    Offered,
    Progressed,
    Rejected,
    Reverted,
    Supersede,
)
from service.domain.job_reports import observe
from service.domain.jobs import (
    TERMINAL_STATES,
    TRANSITIONS,
    Job,
    JobState,
    apply,
    expire,
    needs_rollback,
    rollback_job,
    workflow_id,
)
from service.domain.spec import RetryPolicy

S = JobState
T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
POLICY = RetryPolicy(
    in_progress_timeout=timedelta(minutes=30),
    confirm_grace=timedelta(minutes=10),
    max_retries=2,
    backoff_base=timedelta(minutes=1),
    backoff_cap=timedelta(minutes=3),
    install_stall=timedelta(minutes=20),
)
SOAK = timedelta(hours=1)
WF1 = workflow_id("r1", "rel-2", 1)


def _job(state: JobState, **changes: Any) -> Job:
    job = Job("r1", "dev-1", "rel-2", 0, SOAK, state=state)
    if state is not S.PENDING:
        job = replace(job, attempt=1, workflow_id=WF1)
    if state in (
        S.OFFERED,
        S.DOWNLOADING,
        S.VERIFYING,
        S.TRANSFERRING,
        S.STAGED,
        S.ACTIVATING,
        S.CANCELLING,
    ):
        job = replace(job, deadline=T0)
    if state is S.SOAKING:
        job = replace(job, soak_until=T0 - timedelta(minutes=10), deadline=T0)
    return replace(job, **changes)


_BEFORE = (S.OFFERED, S.DOWNLOADING, S.VERIFYING, S.TRANSFERRING, S.STAGED)
_PHASES = (S.DOWNLOADING, S.VERIFYING, S.TRANSFERRING, S.STAGED, S.ACTIVATING)
_REVOKE = (RevokeOffer("r1", "dev-1", WF1),)

# (id, job, event, expected state, expected commands)
LEGAL: list[tuple[str, Job, JobEvent, JobState, tuple[object, ...]]] = [
    ("pending-offered", _job(S.PENDING), Offered(WF1), S.OFFERED, ()),
    ("pending-cancel", _job(S.PENDING), Cancel("abort"), S.CANCELLED, ()),
    ("pending-supersede", _job(S.PENDING), Supersede("rollback"), S.CANCELLED, ()),
]
for state in _BEFORE:
    name = state.value
    LEGAL += [
        (f"{name}-activated", _job(state), Activated(), S.SOAKING, ()),
        (f"{name}-rejected", _job(state), Rejected("target-hash", "check"), S.REJECTED, ()),
        (f"{name}-failed-retry", _job(state), Failed("download", "stage"), S.PENDING, ()),
        (
            f"{name}-failed-final",
            _job(state, attempt=3),
            Failed("download", "stage"),
            S.FAILED,
            (),
        ),
        (f"{name}-reverted", _job(state), Reverted("selftest", "activate"), S.REVERTED, ()),
        (
            f"{name}-cancel",
            _job(state),
            Cancel("abort"),
            # Begun: wait for the device to say it undid its run (its report may lag behind).
            S.CANCELLED if state is S.OFFERED else S.CANCELLING,
            _REVOKE,
        ),
        (f"{name}-supersede", _job(state), Supersede("rollback"), S.CANCELLED, ()),
    ]
    LEGAL += [
        (f"{name}-progressed-{phase.value}", _job(state), Progressed(phase), phase, ())
        for phase in _PHASES
        if _PHASES.index(phase) > (_PHASES.index(state) if state in _PHASES else -1)
    ]
    LEGAL += [
        (f"{name}-deadline-retry", _job(state), Deadline(), S.PENDING, _REVOKE),
        (f"{name}-deadline-final", _job(state, attempt=3), Deadline(), S.TIMED_OUT, _REVOKE),
    ]
LEGAL += [
    ("activating-activated", _job(S.ACTIVATING), Activated(), S.SOAKING, ()),
    ("activating-reverted", _job(S.ACTIVATING), Reverted("selftest", "activate"), S.REVERTED, ()),
    ("activating-health-failed", _job(S.ACTIVATING), HealthFailed("crash"), S.FAILED, ()),
    ("activating-deadline", _job(S.ACTIVATING), Deadline(), S.TIMED_OUT, ()),
    ("activating-supersede", _job(S.ACTIVATING), Supersede("rollback"), S.CANCELLED, ()),
    ("activating-cancel", _job(S.ACTIVATING), Cancel("abort"), S.CANCELLING, _REVOKE),
    ("cancelling-reverted", _job(S.CANCELLING), Reverted("cancelled", "x"), S.CANCELLED, ()),
    ("cancelling-installed-anyway", _job(S.CANCELLING), Activated(), S.FAILED, ()),
    ("cancelling-deadline", _job(S.CANCELLING), Deadline(), S.FAILED, ()),
    ("cancelling-supersede", _job(S.CANCELLING), Supersede("rollback"), S.CANCELLED, ()),
    ("soaking-confirmed", _job(S.SOAKING), Confirmed(), S.CONFIRMED, ()),
    ("soaking-reverted", _job(S.SOAKING), Reverted("reverted", "soak"), S.REVERTED, ()),
    ("soaking-health-failed", _job(S.SOAKING), HealthFailed("crash"), S.FAILED, ()),
    ("soaking-deadline", _job(S.SOAKING), Deadline(), S.TIMED_OUT, ()),
    ("soaking-supersede", _job(S.SOAKING), Supersede("rollback"), S.CANCELLED, ()),
]


@pytest.mark.parametrize(
    ("job", "event", "expected", "commands"),
    [row[1:] for row in LEGAL],
    ids=[row[0] for row in LEGAL],
)
def test_legal_transition(
    job: Job, event: JobEvent, expected: JobState, commands: tuple[object, ...]
) -> None:
    new, emitted = apply(job, event, T0, POLICY)
    assert new.state is expected
    assert emitted == commands
    assert new.changed_at == T0


def test_the_table_rows_cover_every_listed_transition_and_target() -> None:
    covered = {(row[1].state, type(row[2]), row[3]) for row in LEGAL}
    listed = {
        (state, event, target)
        for state, events in TRANSITIONS.items()
        for event, targets in events.items()
        for target in targets
    }
    assert covered == listed


ALL_EVENTS: list[JobEvent] = [
    Offered(WF1),
    Progressed(S.DOWNLOADING),
    Activated(),
    Confirmed(),
    Rejected("x", "check"),
    Failed("x", "stage"),
    Reverted("x", "activate"),
    HealthFailed("x"),
    Deadline(),
    Cancel("x"),
    Supersede("x"),
]
ILLEGAL = [
    (state, event)
    for state in JobState
    for event in ALL_EVENTS
    if type(event) not in TRANSITIONS[state]
]


@pytest.mark.parametrize(
    ("state", "event"),
    ILLEGAL,
    ids=[f"{state.value}-{type(event).__name__}" for state, event in ILLEGAL],
)
def test_illegal_transition_names_state_and_event(state: JobState, event: JobEvent) -> None:
    with pytest.raises(InvalidTransitionError) as caught:
        apply(_job(state), event, T0, POLICY)
    assert caught.value.state == state
    assert type(event).__name__ in str(caught.value) and state.value in str(caught.value)


def test_terminal_states_accept_nothing() -> None:
    assert all(TRANSITIONS[state] == {} for state in TERMINAL_STATES)


@pytest.mark.parametrize(
    ("job", "event"),
    [
        (_job(S.PENDING), Offered(workflow_id("r1", "rel-2", 2))),
        (_job(S.PENDING, not_before=T0 + timedelta(seconds=1)), Offered(WF1)),
        (_job(S.DOWNLOADING, deadline=T0 + timedelta(seconds=1)), Deadline()),
        (_job(S.TRANSFERRING), Progressed(S.DOWNLOADING)),
        (_job(S.OFFERED), Progressed(S.PENDING)),
    ],
    ids=[
        "offer-with-wrong-workflow",
        "offer-before-retry-wait",
        "deadline-too-early",
        "progress-backwards",
        "progress-to-non-phase",
    ],
)
def test_guarded_events_refused(job: Job, event: JobEvent) -> None:
    with pytest.raises(InvalidTransitionError):
        apply(job, event, T0, POLICY)


def test_offer_sets_the_workflow_and_clears_the_retry_wait() -> None:
    job = _job(S.PENDING, attempt=1, not_before=T0)
    new, _ = apply(job, Offered(workflow_id("r1", "rel-2", 2)), T0, POLICY)
    assert (new.attempt, new.workflow_id, new.not_before) == (2, "r1.rel-2.2", None)


def test_an_unanswered_offer_times_out_after_the_offer_timeout() -> None:
    # Before, an OFFERED job had no deadline: one offline device held its stage for ever.
    offered, _ = apply(_job(S.PENDING), Offered(WF1), T0, POLICY)
    assert offered.deadline == T0 + POLICY.offer_timeout
    assert expire(offered, T0 + POLICY.offer_timeout - timedelta(seconds=1), POLICY) is None
    assert expire(offered, T0 + POLICY.offer_timeout, POLICY) == Deadline()
    retried, commands = apply(offered, Deadline(), T0 + POLICY.offer_timeout, POLICY)
    assert retried.state is S.PENDING and commands == _REVOKE


def test_in_progress_timeout_starts_at_first_progress_not_at_offer() -> None:
    offered = _job(S.OFFERED)  # an offline device keeps its offer until the offer timeout
    later = T0 + timedelta(hours=5)
    downloading, _ = apply(offered, Progressed(S.DOWNLOADING), later, POLICY)
    assert downloading.deadline == later + POLICY.in_progress_timeout
    verifying, _ = apply(downloading, Progressed(S.VERIFYING), later + timedelta(minutes=5), POLICY)
    assert verifying.deadline == downloading.deadline
    assert expire(verifying, later + timedelta(minutes=24), POLICY) is None
    assert expire(verifying, later + timedelta(minutes=30), POLICY) == Deadline()


@pytest.mark.parametrize(
    ("attempt", "wait"),
    [(1, timedelta(minutes=1)), (2, timedelta(minutes=2))],
    ids=["first-retry", "second-retry-doubles"],
)
def test_retry_backs_off_exponentially(attempt: int, wait: timedelta) -> None:
    new, _ = apply(_job(S.DOWNLOADING, attempt=attempt), Failed("fetch", "check"), T0, POLICY)
    assert new.state is S.PENDING and new.not_before == T0 + wait
    assert (new.reason, new.step) == ("fetch", "check")


def test_backoff_is_capped() -> None:
    assert RetryPolicy(backoff_cap=timedelta(minutes=3)).backoff(10) == timedelta(minutes=3)


_STALLS = [S.DOWNLOADING, S.VERIFYING, S.TRANSFERRING, S.STAGED, S.ACTIVATING]


@pytest.mark.parametrize("state", _STALLS, ids=[s.value for s in _STALLS])
def test_an_install_with_no_phase_progress_stalls_with_a_clear_reason(state: JobState) -> None:
    # Before, a device stuck in one phase held its job until the whole in-progress timeout.
    job = _job(state, deadline=T0 + timedelta(hours=1), changed_at=T0)
    assert expire(job, T0 + POLICY.install_stall - timedelta(seconds=1), POLICY) is None
    at = T0 + POLICY.install_stall
    assert expire(job, at, POLICY) == Deadline(stalled=True)
    new, _ = apply(job, Deadline(stalled=True), at, POLICY)
    assert (new.reason, new.step) == ("install-stalled", state.value)
    assert new.state is (S.TIMED_OUT if state is S.ACTIVATING else S.PENDING)  # retried before


def test_progress_restarts_the_stall_clock_and_a_stall_is_refused_early() -> None:
    downloading = _job(S.DOWNLOADING, deadline=T0 + timedelta(hours=1), changed_at=T0)
    later = T0 + timedelta(minutes=10)
    staged, _ = apply(downloading, Progressed(S.STAGED), later, POLICY)
    assert expire(staged, T0 + POLICY.install_stall, POLICY) is None
    assert expire(staged, later + POLICY.install_stall, POLICY) == Deadline(stalled=True)
    with pytest.raises(InvalidTransitionError):
        apply(staged, Deadline(stalled=True), T0 + POLICY.install_stall, POLICY)
    soaking = _job(S.SOAKING, changed_at=T0, deadline=T0 + timedelta(days=1))  # never stalls
    assert expire(soaking, T0 + POLICY.install_stall, POLICY) is None


def test_activation_starts_the_soak_and_the_confirm_deadline() -> None:
    new, _ = apply(_job(S.ACTIVATING), Activated(), T0, POLICY)
    assert new.soak_until == T0 + SOAK
    assert new.deadline == T0 + SOAK + POLICY.confirm_grace


# -- the device's reported twin -----------------------------------------------------------------


def _report(
    state: str = "deploying",
    *,
    step: str = "check",
    reason: str = "",
    workflow: str | None = WF1,
    installed: str | None = "rel-1",
    seen: datetime = T0,
    cores: dict[str, str] | None = None,
    phase: WorkflowPhase | None = None,
) -> DeviceReport:
    health = None if cores is None else {core: _alive(s) for core, s in cores.items()}
    return DeviceReport(AgentState(state), workflow, installed, seen, reason, step, health, phase)


def _alive(state: str, *, beat: datetime = T0, inferences: int = 1) -> CoreHealth:
    """A core that showed itself since its activation (ten minutes before T0)."""
    return CoreHealth(CoreState(state), T0 - timedelta(minutes=10), beat, inferences)


def _phase(phase: WorkflowPhase, **options: Any) -> DeviceReport:
    state = "idle" if phase in (WorkflowPhase.CONFIRMED, WorkflowPhase.REVERTED) else "deploying"
    state = "failed" if phase is WorkflowPhase.FAILED else options.pop("state", state)
    return _report(state, phase=phase, **options)


OBSERVE = [
    ("pending-ignores-reports", _job(S.PENDING), _report(), None),
    ("other-workflow-ignored", _job(S.OFFERED), _report(workflow="r0.rel-1.1"), None),
    ("check-is-downloading", _job(S.OFFERED), _report(step="check"), Progressed(S.DOWNLOADING)),
    ("resume-is-downloading", _job(S.OFFERED), _report(step="resume"), Progressed(S.DOWNLOADING)),
    ("unknown-step-downloading", _job(S.OFFERED), _report(step="xyz"), Progressed(S.DOWNLOADING)),
    ("verify", _job(S.DOWNLOADING), _report(step="verify"), Progressed(S.VERIFYING)),
    ("stage-is-transferring", _job(S.OFFERED), _report(step="stage"), Progressed(S.TRANSFERRING)),
    ("activate", _job(S.TRANSFERRING), _report(step="activate"), Progressed(S.ACTIVATING)),
    ("restart-goes-back-ignored", _job(S.TRANSFERRING), _report(step="resume"), None),
    ("same-phase-ignored", _job(S.DOWNLOADING), _report(step="check"), None),
    (
        "idle-on-release-activated",
        _job(S.ACTIVATING),
        _report("idle", step="confirm", installed="rel-2"),
        Activated(),
    ),
    (
        "offline-catch-up-activated",
        _job(S.OFFERED),
        _report("idle", step="confirm", installed="rel-2"),
        Activated(),
    ),
    (
        "signature-refusal-rejected",
        _job(S.DOWNLOADING),
        _report("failed", step="check", reason="signature"),
        Rejected("signature", "check"),
    ),
    (
        "fetch-failure-is-transient",
        _job(S.DOWNLOADING),
        _report("failed", step="check", reason="fetch"),
        Failed("fetch", "check"),
    ),
    (
        "transfer-failure",
        _job(S.TRANSFERRING),
        _report("failed", step="stage", reason="core-unavailable"),
        Failed("core-unavailable", "stage"),
    ),
    (
        "selftest-failure-reverted",
        _job(S.ACTIVATING),
        _report("failed", step="activate", reason="trial-ended"),
        Reverted("trial-ended", "activate"),
    ),
    (
        "left-activation-without-release",
        _job(S.ACTIVATING),
        _report("idle", step="check", installed="rel-1"),
        Reverted("not-installed", "check"),
    ),
    (
        "idle-without-release-failed",
        _job(S.DOWNLOADING),
        _report("idle", step="check", reason="cancelled"),
        Failed("cancelled", "check"),
    ),
    (
        "soaking-seen-after-soak-confirmed",
        _job(S.SOAKING),
        _report("idle", installed="rel-2", cores={"m4-0": "running"}),
        Confirmed(),
    ),
    (
        "soaking-seen-before-soak-waits",
        _job(S.SOAKING, soak_until=T0 + timedelta(seconds=1)),
        _report("idle", installed="rel-2"),
        None,
    ),
    (
        "soaking-device-fell-back",
        _job(S.SOAKING),
        _report("idle", installed="rel-1", workflow="other"),
        Reverted("release-not-active", "check"),
    ),
    (
        "soaking-core-fault",
        _job(S.SOAKING),
        _report("idle", installed="rel-2", cores={"m4-0": "running", "m4-1": "fault"}),
        HealthFailed("cores m4-1:fault"),
    ),
    ("terminal-ignores-reports", _job(S.CONFIRMED), _report("idle", installed="rel-1"), None),
    (
        "phase-downloading",
        _job(S.OFFERED),
        _phase(WorkflowPhase.DOWNLOADING),
        Progressed(S.DOWNLOADING),
    ),
    ("phase-staged", _job(S.DOWNLOADING), _phase(WorkflowPhase.STAGED), Progressed(S.STAGED)),
    (
        "phase-activating",
        _job(S.STAGED),
        _phase(WorkflowPhase.ACTIVATING),
        Progressed(S.ACTIVATING),
    ),
    ("phase-trial-is-activating", _job(S.ACTIVATING), _phase(WorkflowPhase.TRIAL), None),
    (
        "phase-confirmed-activated",
        _job(S.ACTIVATING),
        _phase(WorkflowPhase.CONFIRMED, installed="rel-2"),
        Activated(),
    ),
    (
        "phase-reverted-after-activation",
        _job(S.ACTIVATING),
        _phase(WorkflowPhase.REVERTED, step="activate", reason="selftest-failed"),
        Reverted("selftest-failed", "activate"),
    ),
    (
        "phase-failed-signature-rejected",
        _job(S.DOWNLOADING),
        _phase(WorkflowPhase.FAILED, reason="signature"),
        Rejected("signature", "check"),
    ),
    (
        "cancelling-device-reverted",
        _job(S.CANCELLING),
        _phase(WorkflowPhase.REVERTED, reason="cancelled", step="stage"),
        Reverted("cancelled", "stage"),
    ),
    (
        "cancelling-device-still-activating",
        _job(S.CANCELLING),
        _phase(WorkflowPhase.ACTIVATING),
        None,
    ),
    (
        "cancelling-device-installed-anyway",
        _job(S.CANCELLING),
        _phase(WorkflowPhase.CONFIRMED, installed="rel-2"),
        Activated(),
    ),
    (
        "cancelling-other-workflow-ignored",
        _job(S.CANCELLING),
        _phase(WorkflowPhase.REVERTED, workflow="r1.rel-2.2"),
        None,
    ),
]


@pytest.mark.parametrize(
    ("job", "report", "expected"),
    [row[1:] for row in OBSERVE],
    ids=[row[0] for row in OBSERVE],
)
def test_observe(job: Job, report: DeviceReport, expected: JobEvent | None) -> None:
    event = observe(job, report, T0, POLICY)
    assert event == expected
    if event is not None:
        assert type(event) in TRANSITIONS[job.state]


def test_from_twin_reads_the_agent_shape() -> None:
    agent = {
        "state": "deploying",
        "workflow": {"action": 3, "id": WF1},
        "installedReleaseId": "rel-1",
        "lastResult": {"code": 1, "reason": "", "detail": "", "step": "activate"},
        "cores": {
            "m4-0": {"state": "selftest", "heartbeatAtMs": 5, "inferences": 2},
            "m4-1": {"state": "running"},
        },
        "phase": {"name": "trial", "workflowId": WF1, "reason": ""},
    }
    report = DeviceReport.from_twin(agent, T0)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert report == DeviceReport(
        AgentState.DEPLOYING,
        WF1,
        "rel-1",
        T0,
        "",
        "activate",
        {
            "m4-0": CoreHealth(CoreState.SELFTEST, None, epoch + timedelta(milliseconds=5), 2),
            "m4-1": CoreHealth(CoreState.RUNNING),
        },
        WorkflowPhase.TRIAL,
    )
    assert observe(_job(S.TRANSFERRING), report, T0, POLICY) == Progressed(S.ACTIVATING)


def test_the_phase_names_the_run_it_is_about_not_the_desired_workflow() -> None:
    agent = {
        "state": "idle",
        "workflow": {"action": 3, "id": "r1.rel-2.2"},  # the next offer, not picked up yet
        "phase": {"name": "reverted", "workflowId": WF1, "reason": "cancelled"},
    }
    report = DeviceReport.from_twin(agent, T0)
    assert (report.workflow_id, report.reason) == (WF1, "cancelled")
    assert observe(_job(S.CANCELLING), report, T0, POLICY) == Reverted("cancelled", "cancel")


@pytest.mark.parametrize(
    "agent",
    [
        {},
        {"state": 7, "workflow": "x", "lastResult": [], "cores": "y"},
        {"state": "idle", "workflow": {"id": None}, "installedReleaseId": 5},
        {"state": "idle", "phase": {"name": "installing"}},
    ],
    ids=["empty", "wrong-types", "partial", "unknown-phase"],
)
def test_from_twin_refuses_what_is_off_the_contract(agent: dict[str, object]) -> None:
    with pytest.raises(TwinError) as caught:
        DeviceReport.from_twin(agent, T0)
    assert caught.value.reason == "bad-reported"


# -- "done" is observed on the cores --------------------------------------------------------------

_SILENT = [
    ("heartbeat-too-old", {"beat": T0 - POLICY.core_silence - timedelta(seconds=1)}),
    ("heartbeat-before-activation", {"beat": T0 - timedelta(minutes=11)}),
    ("no-inference-since-activation", {"inferences": 0}),
]


@pytest.mark.parametrize("silent", [row[1] for row in _SILENT], ids=[row[0] for row in _SILENT])
def test_a_core_that_stopped_after_activation_is_never_confirmed(silent: dict[str, Any]) -> None:
    # Before, a twin still saying "running" and a hub kept busy by telemetry confirmed the job.
    job = _job(S.SOAKING)
    report = DeviceReport(
        AgentState.IDLE,
        WF1,
        "rel-2",
        T0,  # the hub heard the device just now
        cores={"m4-0": _alive("running"), "m4-1": _alive("running", **silent)},
        phase=WorkflowPhase.CONFIRMED,
    )
    assert report.silent_cores(T0, POLICY.core_silence) == ["m4-1"]
    assert observe(job, report, T0, POLICY) is None
    assert expire(job, T0, POLICY) == Deadline()  # silence ends in TIMED_OUT, never in CONFIRMED
    assert apply(job, Deadline(), T0, POLICY)[0].state is S.TIMED_OUT


def test_a_report_without_cores_never_confirms() -> None:
    report = DeviceReport(AgentState.IDLE, WF1, "rel-2", T0, phase=WorkflowPhase.CONFIRMED)
    assert observe(_job(S.SOAKING), report, T0, POLICY) is None


def test_every_core_alive_since_activation_confirms() -> None:
    report = _report("idle", installed="rel-2", cores={"m4-0": "running", "m4-1": "running"})
    later = T0 + POLICY.core_silence  # the bound is inclusive
    assert observe(_job(S.SOAKING), report, later, POLICY) == Confirmed()


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (_job(S.PENDING), False),
        (_job(S.TRANSFERRING), False),
        (_job(S.ACTIVATING), True),
        (_job(S.SOAKING), True),
        (_job(S.CONFIRMED), True),
        (_job(S.FAILED, step="soak"), True),
        (_job(S.FAILED, step="stage"), False),
        (_job(S.REVERTED), False),
        (_job(S.STAGED), True),
        (_job(S.CANCELLING), True),
        (_job(S.FAILED, step="cancel"), True),
        (_job(S.CANCELLED, step="reverted"), False),
    ],
    ids=[
        "pending",
        "transferring",
        "activating",
        "soaking",
        "confirmed",
        "unhealthy",
        "failed",
        "reverted",
        "staged",
        "cancelling",
        "installed-after-cancel",
        "cancel-undone",
    ],
)
def test_needs_rollback(job: Job, expected: bool) -> None:
    assert needs_rollback(job) is expected


@pytest.mark.parametrize(
    ("forward", "existing", "expected_attempt"),
    [
        (_job(S.SOAKING), None, 0),
        (_job(S.CONFIRMED), None, 0),
        (_job(S.FAILED, step="soak"), None, 0),
        (_job(S.TRANSFERRING), None, None),
        (_job(S.CONFIRMED), _job(S.CANCELLED, release_id="rel-1", attempt=2), 2),
        (_job(S.CONFIRMED), _job(S.TIMED_OUT, release_id="rel-1", attempt=1), 1),
        (_job(S.CONFIRMED), _job(S.OFFERED, release_id="rel-1"), None),
        (_job(S.CONFIRMED), _job(S.CONFIRMED, release_id="rel-1"), None),
    ],
    ids=[
        "soaking",
        "confirmed",
        "unhealthy",
        "not-activated",
        "earlier-rollback-cancelled",
        "earlier-rollback-timed-out",
        "earlier-rollback-live",
        "already-back",
    ],
)
def test_rollback_job(forward: Job, existing: Job | None, expected_attempt: int | None) -> None:
    back = rollback_job(forward, "rel-1", existing)
    if expected_attempt is None:
        assert back is None
    else:
        assert back is not None
        assert (back.release_id, back.state, back.attempt) == ("rel-1", S.PENDING, expected_attempt)
        assert back.earlier_attempts == expected_attempt
        assert back.soak == timedelta(0)


def test_a_reopened_rollback_job_gets_its_own_retry_budget() -> None:
    earlier = _job(S.CANCELLED, release_id="rel-1", attempt=3)
    back = rollback_job(_job(S.CONFIRMED), "rel-1", earlier)
    assert back is not None
    offered, _ = apply(back, Offered(workflow_id("r1", "rel-1", 4)), T0, POLICY)
    failed, _ = apply(offered, Failed("fetch", "check"), T0, POLICY)
    assert failed.state is S.PENDING and failed.not_before == T0 + POLICY.backoff(1)
