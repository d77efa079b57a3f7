"""Storage records and release views turned into the API's response models."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from service.api._schemas import (
    AuditOut,
    CoreOut,
    DeviceOut,
    GateOut,
    GroupOut,
    JobOut,
    MemberOut,
    ReleaseOut,
    RolloutOut,
    StageGateOut,
    StageOut,
    TokenOut,
)
from service.releases import ReleaseView
from service.storage import (
    ApiToken,
    AuditEntry,
    Device,
    DeviceGroup,
    DeviceJob,
    Release,
    Rollout,
    RolloutStage,
    UnitOfWork,
    group_filter,
)

__all__ = [
    "audit_out",
    "device_out",
    "group_out",
    "job_out",
    "release_out",
    "rollout_out",
    "token_out",
]


def _cores(reported: Mapping[str, Any]) -> list[CoreOut]:
    cores = reported.get("cores")
    if not isinstance(cores, Mapping):
        return []
    out = []
    for core, report in sorted(cores.items()):
        if not isinstance(report, Mapping):
            continue
        model = report.get("activeModel")
        model = model if isinstance(model, Mapping) else {}
        out.append(
            CoreOut(
                core=str(core),
                slot=_str(report.get("slot")),
                model_id=_str(model.get("modelId")),
                model_version=_str(model.get("version")),
                state=_str(report.get("state")),
            )
        )
    return out


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# A device is online when the service saw it this recently, by the service's clock: a dashboard's
# own clock may be off by hours, so the browser never judges it.
ONLINE_WITHIN = timedelta(minutes=5)


def device_out(device: Device, now: datetime) -> DeviceOut:
    seen = device.last_seen
    return DeviceOut(
        id=device.id,
        hardware_id=device.hardware_id,
        profile=device.profile,
        agent_version=device.agent_version,
        tags=dict(device.tags),
        reported=dict(device.reported),
        last_seen=device.last_seen,
        online=seen is not None and abs(now - seen) <= ONLINE_WITHIN,
        created_at=device.created_at,
        cores=_cores(device.reported),
        release=_str(device.reported.get("installedReleaseId")),
    )


def job_out(job: DeviceJob, release_id: str | None) -> JobOut:
    return JobOut(
        rollout_id=job.rollout_id,
        device_id=job.device_id,
        release_id=getattr(job, "release_id", None) or release_id,
        stage=job.stage,
        state=job.state,
        reason=job.reason,
        attempts=job.attempts,
        updated_at=job.updated_at,
    )


def group_out(uow: UnitOfWork, group: DeviceGroup) -> GroupOut:
    return GroupOut(
        id=group.id,
        name=group.name,
        kind=group.kind,
        selector=group.selector,
        time_zone=group.time_zone,
        production=group.production,
        members=uow.devices.count(group_filter(group)),
    )


def _stage_state(index: int, current: int, state: str) -> str:
    if state in ("draft", "scheduled"):
        return "waiting"
    if state in ("completed",):
        return "done"
    if index < current:
        return "done"
    if index == current:
        return state
    return "waiting"


def _floats(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): float(v) for k, v in value.items()}


def _stage_gate(stage: RolloutStage | None) -> StageGateOut | None:
    """The verdict stored with the stage it decided (see the engine's `_record_decision`)."""
    gate = stage.data.get("gate") if stage is not None else None
    if not isinstance(gate, Mapping):
        return None
    at = gate.get("at")
    return StageGateOut(
        verdict=str(gate.get("verdict")),
        reason=str(gate.get("reason", "")),
        numbers=_floats(gate.get("numbers")),
        cohorts=_floats(gate.get("cohorts")),
        decided=str(gate.get("decided", "")),
        required=bool(gate.get("required", True)),
        at=datetime.fromisoformat(at) if isinstance(at, str) else None,
    )


def rollout_out(uow: UnitOfWork, record: Rollout) -> RolloutOut:
    data = record.state_data
    spec = dict(record.spec)
    current = int(data.get("stage", 0) or 0)
    stored: dict[int, RolloutStage] = {s.index: s for s in uow.rollouts.stages(record.id)}
    # Stage figures count the forward release's jobs; a rollback's jobs (the previous release,
    # for the same devices) are counted apart, or each device would count twice.
    by_stage: dict[int, dict[str, int]] = {}
    rollback: dict[str, int] = {}
    for (release, index), counts in uow.jobs.figures(record.id).items():
        merged = by_stage.setdefault(index, {}) if release == record.release_id else rollback
        for state, n in counts.items():
            merged[state] = merged.get(state, 0) + n
    stages = []
    totals: dict[str, int] = {}
    for index, stage in enumerate(spec.get("stages", [])):
        counts = dict(sorted(by_stage.get(index, {}).items()))
        for state, n in counts.items():
            totals[state] = totals.get(state, 0) + n
        saved = stored.get(index)
        stages.append(
            StageOut(
                index=index,
                name=str(stage.get("name", index)),
                state=_stage_state(index, current, record.state),
                planned=saved.planned if saved and saved.planned else sum(counts.values()),
                started_at=saved.started_at if saved else None,
                ended_at=saved.ended_at if saved else None,
                counts=counts,
                gate=_stage_gate(saved),
            )
        )
    gate = data.get("gate")
    gate_out = None
    if isinstance(gate, Mapping):
        gate_out = GateOut(
            verdict=str(gate.get("verdict")),
            reason=str(gate.get("reason", "")),
            numbers={k: float(v) for k, v in dict(gate.get("numbers") or {}).items()},
        )
    elif isinstance(gate, str):
        gate_out = GateOut(verdict=gate)
    return RolloutOut(
        id=record.id,
        release_id=record.release_id,
        previous_release_id=record.previous_release_id,
        group_id=record.group_id,
        state=record.state,
        stage=current,
        reason=str(data.get("reason", "") or ""),
        created_at=record.created_at,
        updated_at=record.updated_at,
        approvals=[str(a) for a in data.get("approvals", [])],
        spec=spec,
        stages=stages,
        totals=totals,
        rollback=dict(sorted(rollback.items())),
        gate=gate_out,
    )


def audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        seq=entry.seq,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        subject=entry.subject,
        details=dict(entry.details),
        hash=entry.hash,
    )


def token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=token.role,
        created_at=token.created_at,
        revoked_at=token.revoked_at,
    )


def release_out(view: ReleaseView) -> ReleaseOut:
    return ReleaseOut.model_validate(view.to_dict())


def stored_release_out(release: Release) -> ReleaseOut:
    """A published release read straight from storage (no release service configured)."""
    manifest = dict(release.manifest)
    members = manifest.get("members") or []
    return ReleaseOut(
        id=release.id,
        status="published",
        counter=release.counter,
        hardware_ids=list(release.hardware_ids),
        members=[
            MemberOut.model_validate(m) for m in members if isinstance(m, Mapping) and "core" in m
        ],
        created_at=release.created_at,
        created_by=release.created_by,
    )
