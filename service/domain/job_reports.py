"""What a device's report means for its job: the reading side of the job machine (`jobs.py`).

`observe(job, report, now, policy)` turns the device's reported twin (`DeviceReport`, read from
`tinyfleet.agent` through the wire contract's parser) into at most one job event, which the
job's state accepts.

Invariants:
- Only events in `jobs.TRANSITIONS[job.state]` come out; a report about another workflow is
  ignored, except that a soaking job watches what the device runs whatever it reports.
- Progress is monotonic: a report of an earlier phase (a restarted agent re-checking) gives
  nothing.
- The device's phase is typed (`device_agent.protocol.WorkflowPhase`); a report without one (an
  older agent) is read from its `state` and `step`.
- CONFIRMED is what the cores show (`DeviceReport.silent_cores`), never what the hub heard.
"""

from __future__ import annotations

from datetime import datetime

from device_agent.protocol import AgentState, WorkflowPhase
from service.domain.job_events import (
    Activated,
    Confirmed,
    DeviceReport,
    Failed,
    HealthFailed,
    JobEvent,
    Progressed,
    Rejected,
    Reverted,
)
from service.domain.jobs import PROGRESS, Job, JobState
from service.domain.spec import RetryPolicy

__all__ = ["observe"]

S = JobState
_RANK = {s: i for i, s in enumerate(PROGRESS)}
# The agent's `lastResult.step` while deploying, and the phase it means.
_STEP_PHASE = {
    "check": S.DOWNLOADING,
    "resume": S.DOWNLOADING,
    "download": S.DOWNLOADING,
    "verify": S.VERIFYING,
    "stage": S.TRANSFERRING,
    "transfer": S.TRANSFERRING,
    "activate": S.ACTIVATING,
    "confirm": S.ACTIVATING,
}
# The job state each reported phase of a run in progress means (downloading: by its step).
_PHASE_STATE = {
    WorkflowPhase.STAGED: S.STAGED,
    WorkflowPhase.ACTIVATING: S.ACTIVATING,
    WorkflowPhase.TRIAL: S.ACTIVATING,
}
_UNDONE = frozenset((WorkflowPhase.REVERTED, WorkflowPhase.FAILED))
# Failure reasons that say nothing about the release itself: worth another offer.
_TRANSIENT = frozenset(("fetch", "download", "interrupted", "core-unavailable", "timeout"))


def observe(job: Job, report: DeviceReport, now: datetime, policy: RetryPolicy) -> JobEvent | None:
    """The event a device report read at `now` means for `job`, or None when it tells nothing new.

    Reports for another workflow (an older attempt, another rollout) are ignored, except that a
    soaking job watches what the device runs whatever workflow it reports.
    """
    if job.state is S.SOAKING:
        assert job.soak_until is not None
        if report.installed_release_id != job.release_id:
            return Reverted(report.reason or "release-not-active", report.step or "soak")
        if unhealthy := report.unhealthy_cores():
            return HealthFailed("cores " + ",".join(unhealthy))
        if report.seen_at < job.soak_until or report.silent_cores(now, policy.core_silence):
            return None  # "done" is what the cores show, not what the hub heard
        return Confirmed()
    if report.workflow_id != job.workflow_id:
        return None
    if job.state is S.CANCELLING:
        return _undone(job, report)
    if job.state not in _RANK:
        return None
    if report.phase is not None:
        phase = _phase_state(report)
        if phase is not None:
            return Progressed(phase) if _RANK[phase] > _RANK[job.state] else None
        if report.phase is WorkflowPhase.IDLE:
            return None
    elif report.state == AgentState.DEPLOYING:
        phase = _STEP_PHASE.get(report.step, S.DOWNLOADING)
        return Progressed(phase) if _RANK[phase] > _RANK[job.state] else None
    if _installed(report, job):
        return Activated()
    step = report.step or "check"
    failed = report.state == AgentState.FAILED or report.phase is WorkflowPhase.REVERTED
    if failed and step in ("activate", "confirm"):
        return Reverted(report.reason or "reverted", step)
    if job.state is S.ACTIVATING:
        # The device left activation without the release: it went back by itself.
        return Reverted(report.reason or "not-installed", step)
    if report.state == AgentState.FAILED and step == "check" and report.reason not in _TRANSIENT:
        return Rejected(report.reason or "rejected", step)
    return Failed(report.reason or "not-installed", step)


def _phase_state(report: DeviceReport) -> JobState | None:
    """The job state of a run still in progress (None: the run ended, or has not begun)."""
    if report.phase is WorkflowPhase.DOWNLOADING:
        return _STEP_PHASE.get(report.step, S.DOWNLOADING)
    return _PHASE_STATE.get(report.phase) if report.phase is not None else None


def _installed(report: DeviceReport, job: Job) -> bool:
    """The run ended with the job's release installed."""
    ended = (
        report.phase is WorkflowPhase.CONFIRMED
        if report.phase is not None
        else report.state == AgentState.IDLE
    )
    return ended and report.installed_release_id == job.release_id


def _undone(job: Job, report: DeviceReport) -> JobEvent | None:
    """A cancelling job's event: the device undid the run, or finished it regardless."""
    if _installed(report, job):
        return Activated()
    if report.phase in _UNDONE or (report.phase is None and report.state != AgentState.DEPLOYING):
        return Reverted(report.reason or "cancelled", report.step or "cancel")
    return None
