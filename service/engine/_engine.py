"""The rollout engine: the I/O driver around the pure domain (`service.domain`).

One `tick(now)`:
1. take or renew the leader lease (`EngineLeases`); without it, do nothing;
2. per live rollout: read its live jobs (a read-only unit), read those devices' reported twins
   from the hub gateway in batches, and ask the health gate for its verdict on the current
   stage (outside any unit: no network call or telemetry query holds a transaction);
3. in **one unit of work**: renew the lease again (so a deposed leader's unit fails with
   `LeaseLostError` and rolls back: the fencing), re-read the rollout and its live jobs, turn
   reports and passed deadlines into job events (`jobs.observe`, `jobs.expire`), give devices
   that joined the group PENDING jobs (bounded), build the `JobsSummary` with set-based queries
   (figures grouped in SQL, one page of candidates), call `decide` (with a changed gate verdict
   as a `GateResult`), apply `Offered`/`Cancel`/`StartRollback` to the jobs the commands name,
   and save the rollout (expected revision), the jobs (expected state) and the commands (outbox).
   When the tick's gate verdict decided the stage (a PASS it advanced on, a FAIL that tripped
   it), that verdict is stored with the stage (`rollout_stages.data["gate"]`) in the same unit.

Scale: a tick reads the live jobs (offered .. soaking), never the PENDING or finished ones; the
candidates come from one `LIMIT budget` query walking the (rollout, release, state, stage,
order_key) index, with the "busy in another rollout" check inside it.

Invariants:
- Nothing leaves the engine except through the outbox, written in the same unit as the state
  that caused it: a crash anywhere loses nothing and a replay re-derives the same decision.
- Job changes are conditional on the state they were computed from, and the rollout on its
  revision: a concurrent or deposed engine's unit fails and rolls back whole.
- A device with a live job in another rollout is never a candidate: no device is offered two
  releases at once.
- Production is decided from the devices a rollout reaches (`_production`): at creation, at
  Start, and per candidate at every offer (`Candidate.production`, which `decide` holds back
  without two distinct approvers).
- Every outbox payload carries the leader's fencing `epoch`, the rollout `version` that emitted
  it and its `position`, the idempotency key of commands that have no (device, workflow) key.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from device_agent.protocol import TwinError
from service.domain.commands import (
    Command,
    OfferRelease,
    RevokeOffers,
    StartRollback,
    WriteDirector,
)
from service.domain.job_events import DeviceReport, JobEvent
from service.domain.job_reports import observe
from service.domain.jobs import ACTIVE_STATES, Job, JobState, expire
from service.domain.planner import Candidate, StageFigures, plan_from_hash_set
from service.domain.rollout import (
    TRANSITIONS,
    Decision,
    JobsSummary,
    Rollout,
    RolloutState,
    apply,
    decide,
    offer_budget,
)
from service.domain.rollout_events import (
    GateResult,
    RollbackPlanned,
    RolloutEvent,
    Start,
    Verdict,
)
from service.domain.spec import RolloutSpec
from service.engine._codec import job_from_record, rollout_from_record, rollout_to_record
from service.engine._config import EngineConfig
from service.engine._document import NO_GATE
from service.engine._errors import NotLeaderError
from service.engine._jobs_io import (
    ORDER_OFFSET,
    cancel_offers,
    hashed,
    jobs_in,
    pages,
    plan_joiners,
    save_job,
    start_rollback,
)
from service.engine._ports import HealthGate
from service.engine._production import production_devices, with_production
from service.hubgateway import DeviceTwin, HubGateway
from service.storage import (
    MAX_PAGE,
    ConflictError,
    Lease,
    LeaseLostError,
    RolloutStage,
    Storage,
    UnitOfWork,
)
from service.storage import Rollout as RolloutRecord

__all__ = ["AuditNote", "Engine", "Hook", "TickReport"]

log = logging.getLogger(__name__)

Hook = Callable[[str], None]  # called at each step boundary with its name (tests inject crashes)
R = RolloutState
_IDLE = frozenset({R.DRAFT.value, R.ROLLED_BACK.value})
_LIVE_JOB_STATES = sorted(s.value for s in ACTIVE_STATES)
_GATED = frozenset({R.RUNNING, R.SOAKING, R.WAITING_WINDOW, R.AWAITING_APPROVAL})
_NO_JOINERS = frozenset({R.ABORTED, R.ROLLING_BACK, R.ROLLED_BACK})


@dataclass(frozen=True)
class AuditNote:
    """An audit entry the engine appends in the unit of work of the change it records, so a
    rollout never changes without its entry (nor gets an entry for a change that rolled back)."""

    actor: str
    action: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def append(self, uow: UnitOfWork, now: datetime, subject: str, **more: Any) -> None:
        details = {**self.details, **more}
        uow.audit.append(
            at=now, actor=self.actor, action=self.action, subject=subject, details=details
        )


@dataclass(frozen=True)
class TickReport:
    leader: bool
    rollouts: int = 0
    job_events: int = 0
    commands: int = 0
    conflicts: int = 0  # rollouts skipped this round because another unit changed them first


def _no_hook(step: str) -> None:
    return None


class Engine:
    def __init__(
        self,
        storage: Storage,
        hub: HubGateway,
        config: EngineConfig,
        *,
        gates: HealthGate | None = None,
        hook: Hook = _no_hook,
    ) -> None:
        self._storage = storage
        self._hub = hub
        self._config = config
        self._gates = gates
        self._hook = hook
        # Where each rollout's scan for group joiners goes on next tick (lost on restart:
        # the scan starts over, which only costs time).
        self._joiner_cursor: dict[str, str | None] = {}

    @property
    def config(self) -> EngineConfig:
        return self._config

    def resign(self) -> None:
        """Give the leader lease up (at shutdown), so another engine takes over at once."""
        c = self._config
        with self._storage.begin() as uow:
            uow.leases.release(c.lease_name, c.holder)

    # -- creating and commanding rollouts ---------------------------------------------------

    def create_rollout(
        self,
        spec: RolloutSpec,
        now: datetime,
        created_by: str = "engine",
        *,
        audit: AuditNote | None = None,
    ) -> int:
        """Plan the group's current members into stages and store the rollout (DRAFT) with one
        PENDING job per member, in one unit (bulk inserts). Returns the number of jobs.

        Raises:
            StorageError: NotFoundError (group, release), AlreadyExistsError (rollout id).
        """
        with self._storage.begin() as uow:
            uow.groups.get(spec.group_id)
            members = list(
                hashed(
                    spec.rollout_id,
                    pages(
                        lambda after: uow.groups.member_ids(
                            spec.group_id, after=after, limit=MAX_PAGE
                        )
                    ),
                )
            )
            if not spec.production and production_devices(uow, [d for d, _ in members]):
                spec = replace(spec, production=True)  # it reaches a production group's device
            plan = plan_from_hash_set(spec, {h for _, h in members})
            base = RolloutRecord(
                id=spec.rollout_id,
                group_id=spec.group_id,
                release_id=spec.release_id,
                state=R.DRAFT.value,
                created_at=now,
                updated_at=now,
                previous_release_id=spec.previous_release_id,
            )
            uow.rollouts.create(rollout_to_record(Rollout(spec), plan, base, now, epoch=0))
            bounds = plan.bounds
            jobs = uow.jobs.plan(
                spec.rollout_id,
                spec.release_id,
                (
                    (device_id, bisect_right(bounds, value), value - ORDER_OFFSET)
                    for device_id, value in members
                ),
                now,
            )
            if audit is not None:
                audit.append(uow, now, spec.rollout_id, jobs=jobs)
            return jobs

    def command(
        self,
        rollout_id: str,
        event: RolloutEvent,
        now: datetime,
        *,
        audit: AuditNote | None = None,
    ) -> Decision:
        """Apply an operator command (Start, Pause, Resume, Abort, Approve, NextStage,
        Rollback) now. Safe to call from another thread than the loop's (same holder).

        Raises:
            NotLeaderError: another engine leads; send the command there.
            InvalidTransitionError, PreconditionError: refused by the rollout machine; nothing
                was changed.
            RevisionConflictError: the loop changed the rollout meanwhile; try again.
        """
        lease = self._lead(now)
        return self._decide(rollout_id, now, [event], {}, lease.epoch, audit=audit)

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
        events = commands = conflicts = 0
        for rollout_id in ids:
            with self._storage.begin(readonly=True) as uow:
                record = uow.rollouts.get(rollout_id)
                live = [j.device_id for j in jobs_in(uow, rollout_id, _LIVE_JOB_STATES)]
            self._hook("tick.loaded")
            twins = self._read_twins(live)
            verdict = self._verdict(record, now)
            self._hook("tick.twins")
            try:
                decision = self._decide(rollout_id, now, [], twins, lease.epoch, verdict=verdict)
            except ConflictError as exc:  # includes RevisionConflictError: tick again later
                log.info("rollout %s changed under this tick (%s); next round", rollout_id, exc)
                conflicts += 1
                continue
            self._hook("tick.committed")
            commands += len(decision.commands)
            events += len(twins)
        return TickReport(True, len(ids), events, commands, conflicts)

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

    def _verdict(self, record: RolloutRecord, now: datetime) -> GateResult | None:
        """The gate's verdict on the rollout's current stage, if it is gated and live."""
        if self._gates is None or record.spec.get("gate") in (None, NO_GATE):
            return None
        if R(record.state) not in _GATED:
            return None
        stage = int(record.state_data["stage"])
        try:
            return self._gates.evaluate(record, stage, now)
        except Exception:  # a port failure must not stop the other rollouts; judge next round
            log.exception("health gate failed for rollout %s stage %d", record.id, stage)
            return None

    def _decide(
        self,
        rollout_id: str,
        now: datetime,
        events: Sequence[RolloutEvent],
        twins: dict[str, DeviceTwin],
        epoch: int,
        *,
        verdict: GateResult | None = None,
        audit: AuditNote | None = None,
    ) -> Decision:
        c = self._config
        with self._storage.begin() as uow:
            try:
                uow.leases.renew(c.lease_name, c.holder, now, c.lease_ttl)
            except LeaseLostError as exc:
                raise NotLeaderError(f"lost the lease {c.lease_name!r}") from exc
            record = uow.rollouts.get(rollout_id)
            rollout, plan = rollout_from_record(record)
            if rollout.state is R.DRAFT and any(isinstance(e, Start) for e in events):
                rollout = with_production(uow, rollout)
            spec = rollout.spec
            commands: list[Command] = []
            for stored in jobs_in(uow, rollout_id, _LIVE_JOB_STATES):
                job = job_from_record(stored, spec)
                twin = twins.get(job.device_id)
                event = _report_event(job, twin, now, spec) or expire(job, now, spec.retry)
                if event is not None:
                    commands.extend(save_job(uow, stored, job, event, now, spec))
            cursor = after = self._joiner_cursor.get(rollout_id)
            if rollout.state not in _NO_JOINERS:
                cursor = plan_joiners(uow, spec, plan, rollout.stage, now, after, c.joiner_scan)
            if _fresh(rollout, verdict):
                assert verdict is not None
                events = [verdict, *events]
            summary = self._summary(uow, rollout, now)
            decision = decide(rollout, summary, now, events)
            out, planned = self._execute_in_unit(uow, decision, now)
            commands.extend(out)
            if planned is not None:
                back = apply(decision.rollout, RollbackPlanned(planned), summary, now)
                decision = Decision(back.rollout, decision.commands)
            self._append(uow, commands, decision.rollout, epoch, now)
            if decision.rollout != rollout:
                uow.rollouts.save(
                    rollout_to_record(decision.rollout, plan, record, now, epoch),
                    expected_revision=record.revision,
                )
            _record_stages(uow, rollout, decision.rollout, summary, now)
            _record_decision(uow, rollout, decision.rollout, verdict, events, now)
            if audit is not None:
                audit.append(uow, now, rollout_id, state=decision.rollout.state.value)
            self._hook("tick.before-commit")
        self._joiner_cursor[rollout_id] = cursor  # only once the unit committed
        return decision

    def _summary(self, uow: UnitOfWork, rollout: Rollout, now: datetime) -> JobsSummary:
        spec = rollout.spec
        if rollout.state is R.ABORTED:  # offers nothing, counts nothing: skip the GROUP BY
            return JobsSummary(tuple(StageFigures({}) for _ in spec.stages))
        figures = uow.jobs.figures(spec.rollout_id)
        stages = tuple(
            _figures(figures.get((spec.release_id, i), {})) for i in range(len(spec.stages))
        )
        back = sum(
            (_figures(counts) for (rel, _), counts in figures.items() if rel != spec.release_id),
            StageFigures({}),
        )
        budget = min(offer_budget(rollout, stages, now), MAX_PAGE)
        if budget == 0:
            return JobsSummary(stages, back)
        if rollout.state is R.ROLLING_BACK:
            assert spec.previous_release_id is not None
            release, max_stage = spec.previous_release_id, len(spec.stages)
        else:
            release, max_stage = spec.release_id, rollout.stage
        found = uow.jobs.candidates(
            spec.rollout_id, release, max_stage=max_stage, now=now, limit=budget
        )
        production = _production_among(uow, rollout, [j.device_id for j in found])
        candidates = tuple(
            Candidate(j.device_id, j.attempts + 1, j.device_id in production) for j in found
        )
        return JobsSummary(stages, back, candidates)

    def _execute_in_unit(
        self, uow: UnitOfWork, decision: Decision, now: datetime
    ) -> tuple[list[Command], int | None]:
        """Apply the decision's job-side commands (offers, cancellations, the rollback) inside
        the unit; return the commands for the outbox, in order, and the number of rollback jobs
        when the decision started a rollback."""
        spec = decision.rollout.spec
        out: list[Command] = []
        planned: int | None = None
        offers: dict[str, list[str]] = {}
        for command in decision.commands:
            if isinstance(command, OfferRelease):
                offers.setdefault(command.release_id, []).append(command.device_id)
                out.append(command)
            elif isinstance(command, RevokeOffers):
                out.extend(cancel_offers(uow, spec, spec.release_id, command.reason, now))
                if spec.previous_release_id is not None:  # an aborted rollback stops too
                    out.extend(
                        cancel_offers(uow, spec, spec.previous_release_id, command.reason, now)
                    )
            elif isinstance(command, StartRollback):
                planned, revokes = start_rollback(uow, spec, command, now)
                out.extend(revokes)
            else:
                out.append(command)
        for release_id, device_ids in offers.items():
            # `decide` offered candidates read in this unit: PENDING, retry wait over, each
            # with workflow attempt + 1 (what `jobs.Offered` checks); one statement for all.
            deadline = now + spec.retry.offer_timeout
            moved = uow.jobs.offer(spec.rollout_id, release_id, device_ids, now, deadline)
            if moved != len(device_ids):
                raise ConflictError(f"only {moved} of {len(device_ids)} offers were PENDING")
        return out, planned

    def _append(
        self,
        uow: UnitOfWork,
        commands: Iterable[Command],
        rollout: Rollout,
        epoch: int,
        now: datetime,
    ) -> None:
        commands = list(commands)
        hardware = uow.devices.hardware_ids(
            [c.device_id for c in commands if isinstance(c, WriteDirector)]
        )
        messages: list[tuple[str, dict[str, Any]]] = []
        for position, command in enumerate(commands):
            payload: dict[str, Any] = {
                **asdict(command),
                "epoch": epoch,
                "version": rollout.version,
                "position": position,
                "origin": rollout.spec.rollout_id,
            }
            if isinstance(command, WriteDirector):
                payload["hardware_id"] = hardware[command.device_id]
            messages.append((type(command).__name__, payload))
        uow.outbox.append_many(messages, now)


def _production_among(uow: UnitOfWork, rollout: Rollout, device_ids: list[str]) -> set[str]:
    """The candidates the two-person rule holds back (`decide` pauses on them) unless two
    distinct operators approved; a rollback's offers are not held."""
    if len(rollout.approvals) >= 2 or rollout.state is R.ROLLING_BACK:
        return set()
    return production_devices(uow, device_ids)


def _figures(counts: dict[str, int]) -> StageFigures:
    return StageFigures({JobState(state): n for state, n in counts.items()})


def _fresh(rollout: Rollout, verdict: GateResult | None) -> bool:
    """Whether a gate verdict is news the rollout can take now (its state accepts verdicts,
    it is about the current stage, and it differs from the last verdict)."""
    return (
        verdict is not None
        and GateResult in TRANSITIONS[rollout.state]
        and rollout.state in _GATED
        and verdict.stage == rollout.stage
        and verdict.verdict != rollout.gate
    )


def _report_event(
    job: Job, twin: DeviceTwin | None, now: datetime, spec: RolloutSpec
) -> JobEvent | None:
    if twin is None or twin.agent is None or twin.last_activity is None:
        return None
    try:
        seen_at = datetime.fromisoformat(twin.last_activity)
    except ValueError:
        return None  # device-written garbage is not a report
    if seen_at.tzinfo is None:
        return None
    try:
        report = DeviceReport.from_twin(twin.agent, seen_at)
    except TwinError:
        return None  # a reported document off the contract is not a report
    return observe(job, report, now, spec.retry)


_NOT_STARTED = frozenset({R.DRAFT, R.SCHEDULED})
_ENDED = frozenset({R.COMPLETED, R.ABORTED, R.ROLLING_BACK, R.ROLLED_BACK})


def _record_stages(
    uow: UnitOfWork, before: Rollout, after: Rollout, summary: JobsSummary, now: datetime
) -> None:
    """Stamp when each stage started and ended (what the API shows and the gate's window starts
    at): a stage starts the first time the rollout runs at its index, and ends when the rollout
    moves past it or stops. Written in the decision's unit, so a replay stamps nothing twice."""
    if after.state in _NOT_STARTED or (before.stage, before.state) == (after.stage, after.state):
        return
    stored = {s.index: s for s in uow.rollouts.stages(after.spec.rollout_id)}
    ended = range(before.stage, after.stage) if after.stage > before.stage else ()
    if after.state in _ENDED:
        ended = range(before.stage, after.stage + 1)
    for index in ended:
        stage = stored.get(index)
        if stage is None:
            planned = summary.stages[index].total
            uow.rollouts.put_stage(
                RolloutStage(after.spec.rollout_id, index, "done", planned, ended_at=now)
            )
        elif stage.ended_at is None:
            uow.rollouts.put_stage(replace(stage, state="done", ended_at=now))
    if after.state not in _ENDED and after.stage not in stored:
        uow.rollouts.put_stage(
            RolloutStage(
                after.spec.rollout_id,
                after.stage,
                "started",
                planned=summary.stages[after.stage].total,
                started_at=now,
            )
        )


_TRIPPED = frozenset({R.PAUSED, R.ABORTED, R.ROLLING_BACK})


def _decided_by(
    before: Rollout, after: Rollout, verdict: GateResult | None, events: Sequence[RolloutEvent]
) -> str | None:
    """How the tick's verdict decided the stage: "advanced" (the stage went on while the verdict
    was PASS), "tripped" (a FAIL stopped it), else None (an operator moved it, or the stage
    did not change)."""
    if verdict is None or verdict.stage != before.stage or before.state not in _GATED:
        return None
    if any(not isinstance(e, GateResult) for e in events):
        return None  # an operator command moved the rollout, not the gate
    tripped = after.state in _TRIPPED and before.gate is not Verdict.FAIL
    if verdict.verdict is Verdict.FAIL and tripped and after.gate is Verdict.FAIL:
        return "tripped"
    went_on = after.stage > before.stage or (
        after.state in (R.COMPLETED, R.AWAITING_APPROVAL) and after.state is not before.state
    )
    if went_on and verdict.verdict is Verdict.PASS:
        return "advanced"
    return None


def _record_decision(
    uow: UnitOfWork,
    before: Rollout,
    after: Rollout,
    verdict: GateResult | None,
    events: Sequence[RolloutEvent],
    now: datetime,
) -> None:
    """Store the verdict that decided the stage with the stage: exactly what the rollout moved
    on (its outcome, reason, numbers and cohort sizes), not a later or earlier repeat."""
    decided = _decided_by(before, after, verdict, events)
    if decided is None:
        return
    assert verdict is not None
    stored = {s.index: s for s in uow.rollouts.stages(before.spec.rollout_id)}
    stage = stored.get(before.stage) or RolloutStage(
        before.spec.rollout_id, before.stage, "done", ended_at=now
    )
    gate = {
        "verdict": verdict.verdict.value,
        "reason": verdict.reason,
        "numbers": dict(verdict.numbers),
        "cohorts": dict(verdict.cohorts),
        "decided": decided,
        "required": before.spec.success.require_gate,
        "at": now.isoformat(),
    }
    uow.rollouts.put_stage(replace(stage, data={**stage.data, "gate": gate}))
