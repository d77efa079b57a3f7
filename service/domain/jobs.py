"""The device job state machine: one device, one release, one rollout. Pure; time is a parameter.

    PENDING ─Offered─▶ OFFERED ─Progressed─▶ DOWNLOADING ─▶ VERIFYING ─▶ TRANSFERRING ─▶ STAGED
            ─▶ ACTIVATING (the agent's `activating` and `trial` phases)
    OFFERED .. ACTIVATING ─Activated (the new release runs)─▶ SOAKING
    (a report may skip phases: the twin holds only the device's latest state)
    SOAKING ──Confirmed (on the release, every core alive since activation, at or after
               soak_until)──▶ CONFIRMED
    before STAGED:     Rejected ─▶ REJECTED   Failed ─▶ PENDING (retry after back-off) | FAILED
                       Deadline ─▶ PENDING (retry) | TIMED_OUT
    OFFERED:           Cancel ─▶ CANCELLED (+ RevokeOffer): no report says the device began
    DOWNLOADING .. ACTIVATING: Cancel ─▶ CANCELLING (+ RevokeOffer): the device must say it
                       undid its run (it may be further on than its last report)
    CANCELLING:        Reverted (the device reports `reverted`) ─▶ CANCELLED
                       Activated (it finished on the release) | Deadline ─▶ FAILED, step `cancel`
                       (a rollback sends it back: `needs_rollback`)
    from OFFERED on:   Reverted ─▶ REVERTED (the device went back to its previous release)
    ACTIVATING/SOAKING: HealthFailed ─▶ FAILED   Deadline ─▶ TIMED_OUT   (never retried)
    any live state:    Supersede ─▶ CANCELLED (a rollback job replaces this one)

Events come from two places: `job_reports.observe(job, report, now, policy)` turns the
device's reported twin (`DeviceReport`, read from `tinyfleet.agent`) into at most one event;
`expire(job, now, policy)` turns a passed deadline (or a stalled install) into `Deadline`.
The engine (and the rollout machine, through it) adds `Offered`, `Cancel`, `Supersede` and
per-device `HealthFailed` verdicts from telemetry.

Invariants:
- Every (state, event) pair not in `TRANSITIONS` raises `InvalidTransitionError` naming both;
  `observe` and `expire` only return events the current state accepts.
- Progress is monotonic: a report of an earlier phase (a restarted agent re-checking) changes
  nothing; terminal states never change (stale reports are ignored by `observe`).
- "Done" is observed on the cores (DESIGN decision 5): CONFIRMED needs a report whose
  `installed_release_id` is the job's release, seen at or after `soak_until`, in which no core
  is faulty and every core sent a heartbeat after its activation, no older than
  `retry.core_silence` at `now`, and at least one inference result. Hub activity (which any
  telemetry refreshes) never confirms. Silence until `soak_until + confirm_grace` is
  TIMED_OUT, never CONFIRMED.
- A cancel never loses a device: a job whose device has begun its run (DOWNLOADING ..
  ACTIVATING) waits in CANCELLING until the device reports `reverted` (or a failed or idle
  run); if it reports the release installed instead, or stays silent past
  `retry.in_progress_timeout`, the job ends FAILED at step `cancel`, which `needs_rollback`.
  Reports lag: a device last heard downloading may be recording by the time the cancel
  reaches it, so only an offer no report answered yet is cancelled at once.
- An offer no progress report answers times out after `retry.offer_timeout` (a day by
  default): an offline device keeps its offer that long and catches up when it returns (AWS IoT
  Jobs semantics), but a stage never waits on it for ever; the in-progress timeout then starts
  at the first progress report.
- Each offer has its own workflow id `rollout.release.attempt`, so a report about an older
  attempt cannot move the current one; a job makes at most `1 + max_retries` offers
  (`attempt - earlier_attempts`).
- An install never hangs: a job in progress (DOWNLOADING .. ACTIVATING) whose device reports
  no new phase for `retry.install_stall` (`deadlines.install_seconds`) gets
  `Deadline(stalled=True)`, reason `install-stalled` at the phase it stalled in: retried
  before activation like any deadline, TIMED_OUT from ACTIVATING on.
- Only failures before activation (a download, a transfer, a silent device) are retried; a
  rejection, a revert or an unhealthy soak means the release does not work there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

from service.domain.commands import Command, RevokeOffer
from service.domain.errors import InvalidTransitionError
from service.domain.job_events import (
    Activated,
    Cancel,
    Confirmed,
    Deadline,
    Failed,
    HealthFailed,
    JobEvent,
    Offered,
    Progressed,
    Rejected,
    Reverted,
    Supersede,
)
from service.domain.spec import RetryPolicy

__all__ = [
    "ACTIVE_STATES",
    "FAILURE_STATES",
    "PROGRESS",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Job",
    "JobState",
    "apply",
    "expire",
    "needs_rollback",
    "rollback_job",
    "workflow_id",
]


class JobState(StrEnum):
    PENDING = "pending"
    OFFERED = "offered"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    TRANSFERRING = "transferring"
    STAGED = "staged"
    ACTIVATING = "activating"
    SOAKING = "soaking"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    FAILED = "failed"
    REVERTED = "reverted"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    CANCELLING = "cancelling"


S = JobState
_UNSTAGED = (S.OFFERED, S.DOWNLOADING, S.VERIFYING, S.TRANSFERRING)  # nothing staged yet
_IN_FLIGHT = (*_UNSTAGED, S.STAGED)  # offered, not activated
PROGRESS = (*_IN_FLIGHT, S.ACTIVATING, S.SOAKING)  # a job's progress, in order
ACTIVE_STATES = frozenset((*_IN_FLIGHT, S.ACTIVATING, S.SOAKING, S.CANCELLING))
FAILURE_STATES = frozenset((S.REJECTED, S.FAILED, S.REVERTED, S.TIMED_OUT))
TERMINAL_STATES = frozenset((S.CONFIRMED, S.CANCELLED, *FAILURE_STATES))
_STALLABLE = frozenset((S.DOWNLOADING, S.VERIFYING, S.TRANSFERRING, S.STAGED, S.ACTIVATING))


def workflow_id(rollout_id: str, release_id: str, attempt: int) -> str:
    """The twin workflow id of offer number `attempt` (at most 48+1+48+1+2 = 100 chars)."""
    return f"{rollout_id}.{release_id}.{attempt}"


@dataclass(frozen=True)
class Job:
    """One device's job in one rollout. Built PENDING by the planner; changed only by `apply`."""

    rollout_id: str
    device_id: str
    release_id: str
    stage: int
    soak: timedelta
    state: JobState = JobState.PENDING
    attempt: int = 0  # offers made so far for this (rollout, device, release), numbering workflows
    earlier_attempts: int = 0  # of those, the ones an earlier job made (a re-opened rollback)
    workflow_id: str | None = None
    not_before: datetime | None = None  # a retry waits until then
    deadline: datetime | None = None  # in-progress timeout, or end of the confirm grace
    soak_until: datetime | None = None
    reason: str = ""  # the device's (or our) reason code for the last failure
    step: str = ""
    changed_at: datetime | None = None


_BEFORE_ACTIVATION: Mapping[type[JobEvent], frozenset[JobState]] = {
    Activated: frozenset({S.SOAKING}),
    Rejected: frozenset({S.REJECTED}),
    Failed: frozenset({S.PENDING, S.FAILED}),
    Reverted: frozenset({S.REVERTED}),
    Cancel: frozenset({S.CANCELLED}),
    Supersede: frozenset({S.CANCELLED}),
}
_RETRYABLE_DEADLINE = frozenset({S.PENDING, S.TIMED_OUT})

# Rule: every transition of the job machine is listed here; a pair that is missing is illegal.
TRANSITIONS: Mapping[JobState, Mapping[type[JobEvent], frozenset[JobState]]] = {
    S.PENDING: {
        Offered: frozenset({S.OFFERED}),
        Cancel: frozenset({S.CANCELLED}),
        Supersede: frozenset({S.CANCELLED}),
    },
    S.OFFERED: {
        **_BEFORE_ACTIVATION,
        Progressed: frozenset({S.DOWNLOADING, S.VERIFYING, S.TRANSFERRING, S.STAGED, S.ACTIVATING}),
        Deadline: _RETRYABLE_DEADLINE,
    },
    S.DOWNLOADING: {
        **_BEFORE_ACTIVATION,
        Cancel: frozenset({S.CANCELLING}),
        Progressed: frozenset({S.VERIFYING, S.TRANSFERRING, S.STAGED, S.ACTIVATING}),
        Deadline: _RETRYABLE_DEADLINE,
    },
    S.VERIFYING: {
        **_BEFORE_ACTIVATION,
        Cancel: frozenset({S.CANCELLING}),
        Progressed: frozenset({S.TRANSFERRING, S.STAGED, S.ACTIVATING}),
        Deadline: _RETRYABLE_DEADLINE,
    },
    S.TRANSFERRING: {
        **_BEFORE_ACTIVATION,
        Cancel: frozenset({S.CANCELLING}),
        Progressed: frozenset({S.STAGED, S.ACTIVATING}),
        Deadline: _RETRYABLE_DEADLINE,
    },
    S.STAGED: {
        **_BEFORE_ACTIVATION,
        Progressed: frozenset({S.ACTIVATING}),
        Deadline: _RETRYABLE_DEADLINE,
        Cancel: frozenset({S.CANCELLING}),
    },
    S.ACTIVATING: {
        Cancel: frozenset({S.CANCELLING}),
        Activated: frozenset({S.SOAKING}),
        Reverted: frozenset({S.REVERTED}),
        HealthFailed: frozenset({S.FAILED}),
        Deadline: frozenset({S.TIMED_OUT}),
        Supersede: frozenset({S.CANCELLED}),
    },
    S.SOAKING: {
        Confirmed: frozenset({S.CONFIRMED}),
        Reverted: frozenset({S.REVERTED}),
        HealthFailed: frozenset({S.FAILED}),
        Deadline: frozenset({S.TIMED_OUT}),
        Supersede: frozenset({S.CANCELLED}),
    },
    S.CANCELLING: {
        Reverted: frozenset({S.CANCELLED}),
        Activated: frozenset({S.FAILED}),
        Deadline: frozenset({S.FAILED}),
        Supersede: frozenset({S.CANCELLED}),
    },
    **{state: {} for state in TERMINAL_STATES},
}


def _retry(job: Job, now: datetime, policy: RetryPolicy, final: JobState) -> Job:
    """Back to PENDING after the back-off if the policy allows one more offer, else `final`."""
    tries = job.attempt - job.earlier_attempts
    if tries <= policy.max_retries:
        return replace(job, state=S.PENDING, not_before=now + policy.backoff(tries))
    return replace(job, state=final)


def _revoke(job: Job) -> tuple[Command, ...]:
    assert job.workflow_id is not None  # every state past PENDING has one
    return (RevokeOffer(job.rollout_id, job.device_id, job.workflow_id),)


def _offered(job: Job, event: Offered, now: datetime, policy: RetryPolicy) -> _Outcome:
    expected = workflow_id(job.rollout_id, job.release_id, job.attempt + 1)
    if event.workflow_id != expected or (job.not_before is not None and now < job.not_before):
        raise InvalidTransitionError(
            "job",
            job.state,
            f"Offered({event.workflow_id}) at {now}",
            (f"Offered({expected}) at or after {job.not_before or 'any time'}",),
        )
    offered = replace(job, state=S.OFFERED, attempt=job.attempt + 1, workflow_id=expected)
    return replace(offered, not_before=None, deadline=now + policy.offer_timeout), ()


def _progressed(job: Job, event: Progressed, now: datetime, policy: RetryPolicy) -> _Outcome:
    deadline = job.deadline if job.state is not S.OFFERED else now + policy.in_progress_timeout
    return replace(job, state=event.phase, deadline=deadline), ()


def _activated(job: Job, event: Activated, now: datetime, policy: RetryPolicy) -> _Outcome:
    if job.state is S.CANCELLING:  # too late: the device finished installing the release
        return replace(job, state=S.FAILED, reason="installed-after-cancel", step="cancel"), ()
    soak_until = now + job.soak
    return replace(
        job, state=S.SOAKING, soak_until=soak_until, deadline=soak_until + policy.confirm_grace
    ), ()


def _confirmed(job: Job, event: Confirmed, now: datetime, policy: RetryPolicy) -> _Outcome:
    return replace(job, state=S.CONFIRMED, deadline=None, reason="", step=""), ()


def _rejected(job: Job, event: Rejected, now: datetime, policy: RetryPolicy) -> _Outcome:
    return replace(job, state=S.REJECTED, reason=event.reason, step=event.step, deadline=None), ()


def _failed(job: Job, event: Failed, now: datetime, policy: RetryPolicy) -> _Outcome:
    failed = replace(job, reason=event.reason, step=event.step, deadline=None)
    return _retry(failed, now, policy, S.FAILED), ()


def _reverted(job: Job, event: Reverted, now: datetime, policy: RetryPolicy) -> _Outcome:
    if job.state is S.CANCELLING:  # the cancel is done: the device is back where it was
        return replace(job, state=S.CANCELLED, step="reverted", deadline=None), ()
    return replace(job, state=S.REVERTED, reason=event.reason, step=event.step, deadline=None), ()


def _health_failed(job: Job, event: HealthFailed, now: datetime, policy: RetryPolicy) -> _Outcome:
    return replace(job, state=S.FAILED, reason=event.reason, step="soak", deadline=None), ()


def _deadline(job: Job, event: Deadline, now: datetime, policy: RetryPolicy) -> _Outcome:
    due = _stalls_at(job, policy) if event.stalled else job.deadline
    if due is None or now < due:
        raise InvalidTransitionError(
            "job", job.state, f"{event} at {now}", (f"{event} at or after {due}",)
        )
    if job.state is S.CANCELLING:
        return replace(job, state=S.FAILED, reason="cancel-timeout", step="cancel"), ()
    reason = "install-stalled" if event.stalled else "timeout"
    timed_out = replace(job, reason=reason, step=job.state.value, deadline=None)
    if job.state in (S.ACTIVATING, S.SOAKING):
        return replace(timed_out, state=S.TIMED_OUT), ()
    return _retry(timed_out, now, policy, S.TIMED_OUT), _revoke(job)


def _cancel(job: Job, event: Cancel, now: datetime, policy: RetryPolicy) -> _Outcome:
    if job.state is S.PENDING:
        return replace(job, state=S.CANCELLED, reason=event.reason, deadline=None), ()
    if job.state is S.OFFERED:
        return replace(job, state=S.CANCELLED, reason=event.reason, deadline=None), _revoke(job)
    # The device began its run and may be further on than its last report: wait for it to
    # report that it undid it (or finished it, then a rollback sends it back).
    waiting = replace(
        job, state=S.CANCELLING, reason=event.reason, deadline=now + policy.in_progress_timeout
    )
    return waiting, _revoke(job)


def _supersede(job: Job, event: Supersede, now: datetime, policy: RetryPolicy) -> _Outcome:
    # No RevokeOffer: the rollback offer that supersedes this job rewrites the same desired twin.
    return replace(job, state=S.CANCELLED, reason=event.reason, deadline=None), ()


_Outcome: TypeAlias = tuple[Job, tuple[Command, ...]]
_HANDLERS: Mapping[type[JobEvent], Callable[..., _Outcome]] = {
    Offered: _offered,
    Progressed: _progressed,
    Activated: _activated,
    Confirmed: _confirmed,
    Rejected: _rejected,
    Failed: _failed,
    Reverted: _reverted,
    HealthFailed: _health_failed,
    Deadline: _deadline,
    Cancel: _cancel,
    Supersede: _supersede,
}


def apply(job: Job, event: JobEvent, now: datetime, policy: RetryPolicy) -> _Outcome:
    """The job after `event` at `now`, and the commands to save with it.

    Raises:
        InvalidTransitionError: the job's state does not accept this event (a caller bug or a
            race the caller must resolve by re-reading the job).
    """
    allowed = TRANSITIONS[job.state]
    targets = allowed.get(type(event))
    if targets is None:
        raise InvalidTransitionError(
            "job", job.state, type(event).__name__, tuple(e.__name__ for e in allowed)
        )
    new, commands = _HANDLERS[type(event)](job, event, now, policy)
    if new.state not in targets:
        raise InvalidTransitionError(
            "job", job.state, repr(event), tuple(f"-> {target}" for target in sorted(targets))
        )
    return replace(new, changed_at=now), commands


def expire(job: Job, now: datetime, policy: RetryPolicy) -> Deadline | None:
    """`Deadline()` when the job's deadline has passed at `now`; `Deadline(stalled=True)` when
    its device reported no new phase for `policy.install_stall`."""
    if Deadline not in TRANSITIONS[job.state]:
        return None
    if job.deadline is not None and now >= job.deadline:
        return Deadline()
    stalls = _stalls_at(job, policy)
    return Deadline(stalled=True) if stalls is not None and now >= stalls else None


def _stalls_at(job: Job, policy: RetryPolicy) -> datetime | None:
    """When a job in progress stalls: its last phase change plus the install bound."""
    if job.state not in _STALLABLE or job.changed_at is None:
        return None
    return job.changed_at + policy.install_stall


def rollback_job(job: Job, to_release_id: str, existing: Job | None) -> Job | None:
    """The rollback job to create for forward `job`, or None. `existing` is the device's
    rollback job in this rollout from an earlier rollback (aborted, say): a live or confirmed
    one is kept; a finished one is replaced, carrying its attempt count so that every offer
    still gets a new workflow id."""
    if not needs_rollback(job) or (
        existing is not None and existing.state not in TERMINAL_STATES - {S.CONFIRMED}
    ):
        return None
    done = existing.attempt if existing is not None else 0
    return Job(
        job.rollout_id,
        job.device_id,
        to_release_id,
        0,
        timedelta(0),
        attempt=done,
        earlier_attempts=done,
    )


def needs_rollback(job: Job) -> bool:
    """Whether a rollback must send this device back: it activated (or may have) the release."""
    return job.state in (S.STAGED, S.ACTIVATING, S.SOAKING, S.CONFIRMED, S.CANCELLING) or (
        job.state is S.FAILED and job.step in ("soak", "cancel")
    )
