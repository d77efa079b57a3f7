"""The engine's job-side work inside a unit of work: saving job transitions, cancelling a
rollout's offers, starting a rollback, and planning devices that joined the group.

Invariants:
- Every job change is conditional on the state it was computed from (`expected_state`), so a
  concurrent or deposed engine's unit fails whole instead of overwriting newer progress.
- PENDING jobs are cancelled with one set-based statement (no device was offered anything, so
  there is nothing to revoke); every other job goes through the job machine one by one.
- A rollback job is saved for every forward job that `jobs.needs_rollback`; a device never has
  two live jobs: its forward job is superseded (if live) in the same unit.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from service.domain.commands import Command, StartRollback
from service.domain.job_events import Cancel, JobEvent, Supersede
from service.domain.jobs import (
    TERMINAL_STATES,
    Job,
    JobState,
    apply,
    needs_rollback,
    rollback_job,
)
from service.domain.planner import StagePlan
from service.domain.spec import RolloutSpec
from service.engine._codec import job_from_record, job_to_record
from service.storage import MAX_PAGE, DeviceJob, Page, UnitOfWork

__all__ = [
    "ORDER_OFFSET",
    "cancel_offers",
    "hashed",
    "jobs_in",
    "keyed_assignment",
    "pages",
    "plan_joiners",
    "save_job",
    "start_rollback",
]

ORDER_OFFSET = 1 << 63  # stage hash (unsigned 64-bit) - ORDER_OFFSET = order_key (signed)
# The jobs a cancel reaches: every offer not yet soaking (the job machine decides, by the
# device's phase, whether a job is cancelled at once or waits CANCELLING for the device).
_IN_FLIGHT = [
    s.value
    for s in (
        JobState.OFFERED,
        JobState.DOWNLOADING,
        JobState.VERIFYING,
        JobState.TRANSFERRING,
        JobState.STAGED,
        JobState.ACTIVATING,
    )
]
_ROLLBACK_SCAN = [
    *_IN_FLIGHT,
    JobState.CANCELLING.value,
    JobState.SOAKING.value,
    JobState.CONFIRMED.value,
    JobState.FAILED.value,
]


def pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    after: str | None = None
    while True:
        page = fetch(after)
        yield from page.items
        if page.next_after is None:
            return
        after = page.next_after


def jobs_in(
    uow: UnitOfWork, rollout_id: str, states: Sequence[str], release_id: str | None = None
) -> list[DeviceJob]:
    """Every job of the rollout in `states`, read whole before the caller changes any, state by
    state (each one range of the (rollout, state, device) index: a million PENDING jobs beside
    them are never walked)."""
    found: list[DeviceJob] = []
    for state in states:

        def page(after: str | None, state: str = state) -> Page[DeviceJob]:
            return uow.jobs.list(
                rollout_id, states=[state], after=after, limit=MAX_PAGE, release_id=release_id
            )

        found.extend(pages(page))
    return found


def hashed(rollout_id: str, device_ids: Iterable[str]) -> Iterator[tuple[str, int]]:
    """`(device_id, stage_hash)` per device, one SHA-256 each."""
    prefix, from_bytes = hashlib.sha256(f"{rollout_id}\0".encode()), int.from_bytes
    for device_id in device_ids:
        digest = prefix.copy()
        digest.update(device_id.encode())
        yield device_id, from_bytes(digest.digest()[:8], "big")


def keyed_assignment(plan: StagePlan, device_ids: Iterable[str]) -> Iterator[tuple[str, int, int]]:
    """`(device_id, stage, order_key)` per device: `plan.assign` with the hash kept, one
    SHA-256 per device (fast enough for a million)."""
    prefix = hashlib.sha256(f"{plan.rollout_id}\0".encode())
    bounds, from_bytes = plan.bounds, int.from_bytes
    for device_id in device_ids:
        digest = prefix.copy()
        digest.update(device_id.encode())
        value = from_bytes(digest.digest()[:8], "big")
        yield device_id, bisect_right(bounds, value), value - ORDER_OFFSET


def save_job(
    uow: UnitOfWork,
    stored: DeviceJob,
    job: Job,
    event: JobEvent,
    now: datetime,
    spec: RolloutSpec,
    *,
    offered: bool = False,
) -> tuple[Command, ...]:
    """Apply `event` to the job and save it if it is still in the state it was read in."""
    new, commands = apply(job, event, now, spec.retry)
    record = job_to_record(new, now, stored)
    if offered:
        record = replace(record, offered_at=now)
    uow.jobs.update(record, expected_state=job.state.value)
    return commands


def cancel_offers(
    uow: UnitOfWork, spec: RolloutSpec, release_id: str, reason: str, now: datetime
) -> list[Command]:
    """Cancel every job of `release_id` that has not activated (one that may have changed its
    device waits CANCELLING for the device to undo it); returns their RevokeOffers."""
    uow.jobs.transition_all(
        spec.rollout_id,
        release_id=release_id,
        from_states=[JobState.PENDING.value],
        to_state=JobState.CANCELLED.value,
        now=now,
        reason=f":{reason}",
    )
    out: list[Command] = []
    for stored in jobs_in(uow, spec.rollout_id, _IN_FLIGHT, release_id):
        job = job_from_record(stored, spec)
        out.extend(save_job(uow, stored, job, Cancel(reason), now, spec))
    return out


def start_rollback(
    uow: UnitOfWork, spec: RolloutSpec, command: StartRollback, now: datetime
) -> tuple[int, list[Command]]:
    """Execute `StartRollback` (see its docstring): returns the number of rollback jobs saved
    and the commands (RevokeOffers of the cancelled forward jobs) for the outbox."""
    to_release = command.to_release_id
    out = cancel_offers(uow, spec, spec.release_id, command.reason, now)  # never activated
    existing = {
        j.device_id: j
        for j in jobs_in(uow, spec.rollout_id, [s.value for s in JobState], to_release)
    }
    created: list[DeviceJob] = []
    replaced = 0
    for stored in jobs_in(uow, spec.rollout_id, _ROLLBACK_SCAN, spec.release_id):
        job = job_from_record(stored, spec)
        if not needs_rollback(job):
            continue
        earlier = existing.get(job.device_id)
        back = rollback_job(
            job, to_release, job_from_record(earlier, spec) if earlier is not None else None
        )
        if back is not None:
            record = job_to_record(back, now, earlier)
            if earlier is None:
                created.append(replace(record, order_key=stored.order_key))
            else:
                uow.jobs.update(record, expected_state=earlier.state)
                replaced += 1
        if job.state not in TERMINAL_STATES:
            out.extend(save_job(uow, stored, job, Supersede(command.reason), now, spec))
    uow.jobs.add(created)
    return len(created) + replaced, out


def plan_joiners(
    uow: UnitOfWork,
    spec: RolloutSpec,
    plan: StagePlan,
    stage: int,
    now: datetime,
    after: str | None,
    scan: int,
) -> str | None:
    """Look at the group's next `scan` members after `after` and give those without a job a
    PENDING job: in their planned stage, or in the current `stage` when their planned one has
    already started. Returns where to look next time (None: start over)."""
    found = uow.jobs.joiners(spec.rollout_id, spec.group_id, after=after, scan=scan)
    if found.items:
        uow.jobs.add(
            DeviceJob(
                spec.rollout_id,
                device_id,
                max(planned, stage),
                JobState.PENDING.value,
                now,
                release_id=spec.release_id,
                order_key=key,
            )
            for device_id, planned, key in keyed_assignment(plan, found.items)
        )
    return found.next_after
