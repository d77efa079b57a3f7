"""The rollout engine: the I/O driver around the pure domain (`service.domain`).

One `tick(now)`:
1. take or renew the leader lease (`EngineLeases`); without it, do nothing;
2. per live rollout: read its live jobs (a read-only unit), read those devices' reported twins
   from the hub gateway in batches (outside any unit: no network call holds a transaction);
3. in **one unit of work**: renew the lease again (so a deposed leader's unit fails with
   `LeaseLostError` and rolls back: the fencing), re-read the rollout and its live jobs, turn
   reports and passed deadlines into job events (`jobs.observe`, `jobs.expire`), build the
   `JobsSummary`, call `decide`, apply `Offered`/`Cancel` to the jobs the commands name, and
   save the rollout (expected revision), the jobs (expected state) and the commands (outbox).

Invariants:
- Nothing leaves the engine except through the outbox, written in the same unit as the state
  that caused it: a crash anywhere loses nothing and a replay re-derives the same decision.
- Job changes are conditional on the state they were computed from, and the rollout on its
  revision: a concurrent or deposed engine's unit fails and rolls back whole.
- A device with a live job in another rollout is never a candidate: no device is offered two
  releases at once.
- Every outbox payload carries the leader's fencing `epoch`, the rollout `version` that emitted
  it and its `position`, the idempotency key of commands that have no (device, workflow) key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from service.domain.commands import (
    Command,
    OfferRelease,
    RevokeOffers,
    StartRollback,
    WriteDirector,
)
from service.domain.job_events import Cancel, DeviceReport, JobEvent, Offered
from service.domain.jobs import ACTIVE_STATES, Job, JobState, apply, expire, observe
from service.domain.planner import Candidate, StageFigures, plan_stages, stage_hash
from service.domain.rollout import (
    Decision,
    JobsSummary,
    Rollout,
    RolloutState,
    decide,
    offer_budget,
)
from service.domain.rollout_events import Rollback, RolloutEvent
from service.domain.spec import FailureAction, RolloutSpec
from service.engine._codec import (
    job_from_record,
    job_to_record,
    rollout_from_record,
    rollout_to_record,
)
from service.engine._config import EngineConfig
from service.engine._errors import NotLeaderError, UnsupportedError
from service.hubgateway import DeviceTwin, HubGateway
from service.storage import (
    MAX_PAGE,
    DeviceJob,
    Lease,
    LeaseLostError,
    Storage,
    UnitOfWork,
)
from service.storage import Rollout as RolloutRecord

__all__ = ["Engine", "Hook", "TickReport"]

Hook = Callable[[str], None]  # called at each step boundary with its name (tests inject crashes)
_IDLE = frozenset({RolloutState.DRAFT.value, RolloutState.ROLLED_BACK.value})
_LIVE_JOB_STATES = sorted(s.value for s in ACTIVE_STATES)
_CANCELLABLE = (
    JobState.PENDING,
    JobState.OFFERED,
    JobState.DOWNLOADING,
    JobState.VERIFYING,
    JobState.TRANSFERRING,
)


@dataclass(frozen=True)
class TickReport:
    leader: bool
    rollouts: int = 0
    job_events: int = 0
    commands: int = 0


def _no_hook(step: str) -> None:
    return None


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    after: str | None = None
    while True:
        page = fetch(after)
        yield from page.items
        if page.next_after is None:
            return
        after = page.next_after


class Engine:
    def __init__(
        self,
        storage: Storage,
        hub: HubGateway,
        config: EngineConfig,
        *,
        hook: Hook = _no_hook,
    ) -> None:
        self._storage = storage
        self._hub = hub
        self._config = config
        self._hook = hook

    # -- creating and commanding rollouts ---------------------------------------------------

    def create_rollout(self, spec: RolloutSpec, now: datetime, created_by: str = "engine") -> int:
        """Plan the group's current members into stages and store the rollout (DRAFT) with one
        PENDING job per member, in one unit. Returns the number of jobs.

        Raises:
            UnsupportedError: the spec rolls back on failure (not implemented yet).
            StorageError: NotFoundError (group, release), AlreadyExistsError (rollout id).
        """
        if spec.failure.action is FailureAction.ROLLBACK:
            raise UnsupportedError("failure action 'rollback' is not supported by the engine yet")
        with self._storage.begin() as uow:
            uow.groups.get(spec.group_id)
            members = [
                d.id
                for d in _pages(
                    lambda after: uow.groups.members(spec.group_id, after=after, limit=MAX_PAGE)
                )
            ]
            plan = plan_stages(spec, members)
            base = RolloutRecord(
                id=spec.rollout_id,
                group_id=spec.group_id,
                release_id=spec.release_id,
                state=RolloutState.DRAFT.value,
                created_at=now,
                updated_at=now,
                previous_release_id=spec.previous_release_id,
            )
            uow.rollouts.create(rollout_to_record(Rollout(spec), plan, base, now, epoch=0))
            return uow.jobs.add(
                DeviceJob(spec.rollout_id, device_id, stage, JobState.PENDING.value, now)
                for device_id, stage in plan.assign(members)
            )

    def command(self, rollout_id: str, event: RolloutEvent, now: datetime) -> Decision:
        """Apply an operator command (Start, Pause, Resume, Abort, Approve, NextStage) now.

        Raises:
            NotLeaderError: another engine leads; send the command there.
            UnsupportedError: Rollback (not implemented yet).
            InvalidTransitionError, PreconditionError: refused by the rollout machine; nothing
                was changed.
        """
        if isinstance(event, Rollback):
            raise UnsupportedError("rollback is not supported by the engine yet")
        lease = self._lead(now)
        return self._decide(rollout_id, now, [event], {}, lease.epoch)

    # -- the loop ------------------------------------------------------------------------------

    def tick(self, now: datetime) -> TickReport:
        """One pass over every live rollout (see the module docstring)."""
        try:
            lease = self._lead(now)
        except NotLeaderError:
            return TickReport(leader=False)
        self._hook("tick.lease")
        with self._storage.begin(readonly=True) as uow:
            ids = [r.id for r in uow.rollouts.list() if r.state not in _IDLE]
        events = commands = 0
        for rollout_id in ids:
            with self._storage.begin(readonly=True) as uow:
                live = [j.device_id for j in self._live_jobs(uow, rollout_id)]
            self._hook("tick.loaded")
            twins = self._read_twins(live)
            self._hook("tick.twins")
            decision = self._decide(rollout_id, now, [], twins, lease.epoch)
            self._hook("tick.committed")
            commands += len(decision.commands)
            events += len(twins)
        return TickReport(True, len(ids), events, commands)

    def _lead(self, now: datetime) -> Lease:
        c = self._config
        with self._storage.begin() as uow:
            lease = uow.leases.acquire(c.lease_name, c.holder, now, c.lease_ttl)
        if lease is None:
            raise NotLeaderError(f"the lease {c.lease_name!r} is held by another engine")
        return lease

    def _read_twins(self, device_ids: Sequence[str]) -> dict[str, DeviceTwin]:
        twins: dict[str, DeviceTwin] = {}
        size = self._config.report_batch
        for start in range(0, len(device_ids), size):
            twins.update(self._hub.get_twins(device_ids[start : start + size]))
        return twins

    def _live_jobs(self, uow: UnitOfWork, rollout_id: str) -> list[DeviceJob]:
        return _jobs_in(uow, rollout_id, _LIVE_JOB_STATES)

    def _decide(
        self,
        rollout_id: str,
        now: datetime,
        events: Sequence[RolloutEvent],
        twins: dict[str, DeviceTwin],
        epoch: int,
    ) -> Decision:
        c = self._config
        with self._storage.begin() as uow:
            try:
                uow.leases.renew(c.lease_name, c.holder, now, c.lease_ttl)
            except LeaseLostError as exc:
                raise NotLeaderError(f"lost the lease {c.lease_name!r}") from exc
            record = uow.rollouts.get(rollout_id)
            rollout, plan = rollout_from_record(record)
            spec = rollout.spec
            commands: list[Command] = []
            for stored in self._live_jobs(uow, rollout_id):
                job = job_from_record(stored, spec)
                event = _report_event(job, twins.get(job.device_id)) or expire(job, now)
                if event is not None:
                    commands.extend(_save_job(uow, job, event, now, spec))
            decision = decide(rollout, self._summary(uow, rollout, now), now, events)
            commands.extend(self._execute_in_unit(uow, decision, now))
            self._append(uow, commands, decision.rollout, epoch, now)
            if decision.rollout != rollout:
                uow.rollouts.save(
                    rollout_to_record(decision.rollout, plan, record, now, epoch),
                    expected_revision=record.revision,
                )
            self._hook("tick.before-commit")
        return decision

    def _summary(self, uow: UnitOfWork, rollout: Rollout, now: datetime) -> JobsSummary:
        spec = rollout.spec
        stages = tuple(
            StageFigures(
                {
                    JobState(state): count
                    for state, count in uow.jobs.count_by_state(spec.rollout_id, stage=i).items()
                }
            )
            for i in range(len(spec.stages))
        )
        budget = offer_budget(rollout, stages, now)
        if budget == 0:
            return JobsSummary(stages)
        pending = [
            j
            for j in _jobs_in(uow, spec.rollout_id, [JobState.PENDING.value])
            if j.stage <= rollout.stage and (j.next_attempt_at is None or j.next_attempt_at <= now)
        ]
        pending.sort(key=lambda j: (j.stage, stage_hash(spec.rollout_id, j.device_id)))
        candidates: list[Candidate] = []
        for job in pending:
            if len(candidates) >= budget:
                break
            if not _busy_elsewhere(uow, job):
                candidates.append(Candidate(job.device_id, job.attempts + 1))
        return JobsSummary(stages, candidates=tuple(candidates))

    def _execute_in_unit(self, uow: UnitOfWork, decision: Decision, now: datetime) -> list[Command]:
        """Apply the decision's job-side commands (offers, cancellations) inside the unit; return
        the commands for the outbox, in order."""
        spec = decision.rollout.spec
        out: list[Command] = []
        for command in decision.commands:
            if isinstance(command, OfferRelease):
                stored = uow.jobs.get(command.rollout_id, command.device_id)
                job = job_from_record(stored, spec)
                _save_job(uow, job, Offered(command.workflow_id), now, spec, offered=True)
                out.append(command)
            elif isinstance(command, RevokeOffers):
                cancellable = [state.value for state in _CANCELLABLE]
                for stored in _jobs_in(uow, command.rollout_id, cancellable):
                    job = job_from_record(stored, spec)
                    out.extend(_save_job(uow, job, Cancel(command.reason), now, spec))
            elif isinstance(command, StartRollback):
                raise UnsupportedError("rollback is not supported by the engine yet")
            else:
                out.append(command)
        return out

    def _append(
        self,
        uow: UnitOfWork,
        commands: Iterable[Command],
        rollout: Rollout,
        epoch: int,
        now: datetime,
    ) -> None:
        for position, command in enumerate(commands):
            payload: dict[str, Any] = {
                **asdict(command),
                "epoch": epoch,
                "version": rollout.version,
                "position": position,
                "origin": rollout.spec.rollout_id,
            }
            if isinstance(command, WriteDirector):
                payload["hardware_id"] = uow.devices.get(command.device_id).hardware_id
            uow.outbox.append(type(command).__name__, payload, now)


def _jobs_in(uow: UnitOfWork, rollout_id: str, states: Sequence[str]) -> list[DeviceJob]:
    """Every job of the rollout in `states`, read whole before the caller changes any."""
    return list(
        _pages(lambda after: uow.jobs.list(rollout_id, states=states, after=after, limit=MAX_PAGE))
    )


def _report_event(job: Job, twin: DeviceTwin | None) -> JobEvent | None:
    if twin is None or twin.agent is None or twin.last_activity is None:
        return None
    try:
        seen_at = datetime.fromisoformat(twin.last_activity)
    except ValueError:
        return None  # device-written garbage is not a report
    if seen_at.tzinfo is None:
        return None
    return observe(job, DeviceReport.from_twin(twin.agent, seen_at))


def _save_job(
    uow: UnitOfWork,
    job: Job,
    event: JobEvent,
    now: datetime,
    spec: RolloutSpec,
    *,
    offered: bool = False,
) -> tuple[Command, ...]:
    new, commands = apply(job, event, now, spec.retry)
    record = job_to_record(new, now)
    if offered:
        record = replace(record, offered_at=now)
    else:
        record = replace(record, offered_at=uow.jobs.get(job.rollout_id, job.device_id).offered_at)
    uow.jobs.update(record, expected_state=job.state.value)
    return commands


def _busy_elsewhere(uow: UnitOfWork, job: DeviceJob) -> bool:
    """Whether the device has a live job in another rollout (so it must not be offered now)."""
    live = {s.value for s in ACTIVE_STATES}
    return any(
        other.rollout_id != job.rollout_id and other.state in live
        for other in uow.jobs.for_device(job.device_id)
    )
