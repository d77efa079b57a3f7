"""How the engine stores the pure domain's values in the storage port's records (JSON mappings).

Invariants:
- `rollout_from_record(rollout_to_record(...))` gives back an equal domain rollout and plan.
- Stage-plan bounds are 64-bit: they are stored as decimal strings, because SQLite's JSON
  functions turn integers above 2**63 into floats.
- A stored job keeps only what the job machine needs: `workflow_id` is derived from the attempt
  and the job's release; `soak` is the stage's for a forward job and 0 for a rollback job (a job
  of another release than the spec's); `earlier_attempts` is not stored (a re-opened rollback
  job counts its earlier offers against its retries); `next_attempt_at` holds the retry time of a
  PENDING job and the deadline of a live one (a soaking job's `soak_until` is its deadline minus
  the confirm grace, as `jobs._activated` sets it); `reason` holds `step:reason`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from service.domain.jobs import Job, JobState, workflow_id
from service.domain.planner import OfferLedger, StagePlan, stage_hash
from service.domain.rollout import Rollout, RolloutState
from service.domain.rollout_events import Verdict
from service.domain.spec import RolloutSpec
from service.engine._document import NO_GATE, spec_from_document, spec_to_document
from service.storage import DeviceJob
from service.storage import Rollout as RolloutRecord

__all__ = [
    "job_from_record",
    "job_to_record",
    "rollout_from_record",
    "rollout_to_record",
    "spec_from_json",
    "spec_to_json",
]


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def spec_to_json(spec: RolloutSpec) -> dict[str, Any]:
    """The stored spec: the public document (`POST /rollouts` body, so the API returns what it
    takes) plus the group's `production` flag and the windows' `time_zone`.

    Raises:
        ValueError: the windows are in different zones (a document has one; the API never
            builds such a spec).
    """
    zones = {w.zone.key for w in spec.windows}
    if len(zones) > 1:
        raise ValueError(f"a stored spec keeps one time zone for its windows, got {sorted(zones)}")
    return {
        **spec_to_document(spec),
        "production": spec.production,
        "time_zone": zones.pop() if zones else "UTC",
    }


def spec_from_json(data: Mapping[str, Any]) -> RolloutSpec:
    """Raises SpecError (a stored spec that no longer validates)."""
    document = {k: v for k, v in data.items() if k not in _STORED_ONLY}
    if document.get("gate") is None:  # stored before gates were on by default: it had none
        document["gate"] = NO_GATE
    return spec_from_document(
        document,
        time_zone=str(data.get("time_zone") or "UTC"),
        production=bool(data.get("production")),
    )


_STORED_ONLY = frozenset({"production", "time_zone"})


def rollout_to_record(
    rollout: Rollout, plan: StagePlan, base: RolloutRecord, now: datetime, epoch: int
) -> RolloutRecord:
    """The storage record for `rollout`, keeping `base`'s identity and revision; `epoch` is the
    leader's fencing epoch that wrote it."""
    state_data = {
        "stage": rollout.stage,
        "approvals": sorted(rollout.approvals),
        "soak_until": _time(rollout.soak_until),
        "gate": rollout.gate.value if rollout.gate is not None else None,
        "ledger": [list(bucket) for bucket in rollout.ledger.buckets],
        "baseline_failed": rollout.baseline_failed,
        "baseline_finished": rollout.baseline_finished,
        "rollback_jobs": rollout.rollback_jobs,
        "reason": rollout.reason,
        "started_at": _time(rollout.started_at),
        "resumed_at": _time(rollout.resumed_at),
        "version": rollout.version,
        "plan_bounds": [str(bound) for bound in plan.bounds],
        "planned_devices": plan.planned_devices,
        "epoch": epoch,
    }
    return replace(
        base,
        state=rollout.state.value,
        spec=spec_to_json(rollout.spec),
        state_data=state_data,
        updated_at=now,
    )


def rollout_from_record(record: RolloutRecord) -> tuple[Rollout, StagePlan]:
    spec = spec_from_json(record.spec)
    d = record.state_data
    rollout = Rollout(
        spec=spec,
        state=RolloutState(record.state),
        stage=int(d["stage"]),
        approvals=frozenset(d["approvals"]),
        soak_until=_parse_time(d["soak_until"]),
        gate=Verdict(d["gate"]) if d["gate"] is not None else None,
        ledger=OfferLedger(tuple((int(s), int(c)) for s, c in d["ledger"])),
        baseline_failed=int(d["baseline_failed"]),
        baseline_finished=int(d["baseline_finished"]),
        rollback_jobs=d["rollback_jobs"],
        reason=str(d["reason"]),
        started_at=_parse_time(d["started_at"]),
        resumed_at=_parse_time(d.get("resumed_at")),  # absent in rows written before it
        version=int(d["version"]),
    )
    plan = StagePlan(
        spec.rollout_id, tuple(int(b) for b in d["plan_bounds"]), int(d["planned_devices"])
    )
    return rollout, plan


_WAITING = frozenset({JobState.PENDING})
_ORDER_OFFSET = 1 << 63  # order_key = stage hash - 2**63: the hash order in a signed BIGINT


def job_to_record(job: Job, now: datetime, base: DeviceJob | None = None) -> DeviceJob:
    """The stored job; `base` (the record it was read from) keeps `offered_at` and `order_key`."""
    timer = job.not_before if job.state in _WAITING else job.deadline
    order_key = (
        base.order_key
        if base is not None
        else stage_hash(job.rollout_id, job.device_id) - _ORDER_OFFSET
    )
    return DeviceJob(
        rollout_id=job.rollout_id,
        device_id=job.device_id,
        release_id=job.release_id,
        stage=job.stage,
        state=job.state.value,
        updated_at=job.changed_at or now,
        reason=_reason(job),
        attempts=job.attempt,
        next_attempt_at=timer,
        offered_at=base.offered_at if base is not None else None,
        order_key=order_key,
    )


def job_from_record(record: DeviceJob, spec: RolloutSpec) -> Job:
    """The domain job; a job of another release than the spec's is a rollback job (no soak)."""
    state = JobState(record.state)
    step, _, reason = (record.reason or "").partition(":")
    deadline = None if state in _WAITING else record.next_attempt_at
    soak_until = None
    if state is JobState.SOAKING and deadline is not None:
        soak_until = deadline - spec.retry.confirm_grace
    forward = record.release_id == spec.release_id
    return Job(
        rollout_id=record.rollout_id,
        device_id=record.device_id,
        release_id=record.release_id,
        stage=record.stage,
        soak=spec.stages[record.stage].soak if forward else timedelta(0),
        state=state,
        attempt=record.attempts,
        workflow_id=(
            workflow_id(spec.rollout_id, record.release_id, record.attempts)
            if record.attempts
            else None
        ),
        not_before=record.next_attempt_at if state in _WAITING else None,
        deadline=deadline,
        soak_until=soak_until,
        reason=reason,
        step=step,
        changed_at=record.updated_at,
    )


MAX_REASON = 200  # the jobs table's reason column; a gate's or device's longer text is cut


def _reason(job: Job) -> str | None:
    if not job.step and not job.reason:
        return None
    text = f"{job.step}:{job.reason}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
