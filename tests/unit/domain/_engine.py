"""A test-only engine: drives the pure domain the way the real engine will, in memory.

It keeps jobs in a dict, simulates devices that report through the twin shape (some slow, some
offline, some failing), and checks the domain's promises after every step. The properties in
`test_properties.py` run it on generated scenarios.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from device_agent.protocol import AgentState, CoreState
from service.domain.commands import (
    Command,
    OfferRelease,
    RevokeOffers,
    StartRollback,
)
from service.domain.errors import InvalidTransitionError, PreconditionError
from service.domain.job_events import (
    Cancel,
    CoreHealth,
    DeviceReport,
    JobEvent,
    Offered,
    Supersede,
)
from service.domain.job_reports import observe
from service.domain.jobs import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Job,
    JobState,
    apply,
    expire,
    needs_rollback,
    rollback_job,
)
from service.domain.planner import Candidate, StageFigures, StagePlan, plan_jobs, stage_hash
from service.domain.rollout import JobsSummary, Rollout, RolloutState, decide, offer_budget
from service.domain.rollout_events import RollbackPlanned, RolloutEvent

S = JobState
_RANK = {s: i for i, s in enumerate(S)}  # declaration order is the progress order


@dataclass
class SimDevice:
    device_id: str
    online: float  # chance to report in a step
    bad: bool  # fails or reverts the release under test
    flaky: bool = True  # downloads sometimes fail (a transient failure, retried)


@dataclass
class Sim:
    rollout: Rollout
    plan: StagePlan
    now: datetime
    rng: random.Random
    devices: dict[str, SimDevice] = field(default_factory=dict)
    jobs: dict[tuple[str, str], Job] = field(default_factory=dict)
    offers: list[tuple[datetime, OfferRelease]] = field(default_factory=list)
    queued: list[RolloutEvent] = field(default_factory=list)
    states: list[RolloutState] = field(default_factory=list)

    # -- the engine's side --------------------------------------------------------------------

    def add_device(self, device: SimDevice) -> None:
        self.devices[device.device_id] = device
        if self.rollout.state not in (RolloutState.ROLLING_BACK, RolloutState.ROLLED_BACK):
            for job in plan_jobs(self.rollout.spec, self.plan, [device.device_id]):
                self.jobs[(job.device_id, job.release_id)] = job

    def _apply_job(self, job: Job, event: JobEvent) -> None:
        before = job
        new, _ = apply(job, event, self.now, self.rollout.spec.retry)
        assert new.attempt - new.earlier_attempts <= 1 + self.rollout.spec.retry.max_retries
        assert before.state not in TERMINAL_STATES
        if new.state is not S.PENDING and new.state not in TERMINAL_STATES:
            # Progress only (a retry goes back to PENDING; any state may end).
            assert _RANK[new.state] >= _RANK[before.state], (before.state, event, new.state)
        self.jobs[(job.device_id, job.release_id)] = new

    def _summary(self) -> JobsSummary:
        spec = self.rollout.spec
        forward = [j for j in self.jobs.values() if j.release_id == spec.release_id]
        back = [j for j in self.jobs.values() if j.release_id != spec.release_id]
        stages = [
            StageFigures.of(j.state for j in forward if j.stage == i)
            for i in range(len(spec.stages))
        ]
        pool = (
            back
            if self.rollout.state is RolloutState.ROLLING_BACK
            else [j for j in forward if j.stage <= self.rollout.stage]
        )
        ready = sorted(
            (j for j in pool if j.state is S.PENDING and (j.not_before or self.now) <= self.now),
            key=lambda j: (j.stage, stage_hash(spec.rollout_id, j.device_id)),
        )
        budget = offer_budget(self.rollout, stages, self.now)
        return JobsSummary(
            tuple(stages),
            StageFigures.of(j.state for j in back),
            tuple(Candidate(j.device_id, j.attempt + 1) for j in ready[:budget]),
        )

    def _execute(self, commands: tuple[Command, ...]) -> None:
        spec = self.rollout.spec
        for command in commands:
            if isinstance(command, OfferRelease):
                job = self.jobs[(command.device_id, command.release_id)]
                self._apply_job(job, Offered(command.workflow_id))
                self.offers.append((self.now, command))
            elif isinstance(command, RevokeOffers):
                for job in list(self.jobs.values()):
                    if job.state in (
                        S.PENDING,
                        S.OFFERED,
                        S.DOWNLOADING,
                        S.VERIFYING,
                        S.TRANSFERRING,
                    ):
                        self._apply_job(job, Cancel(command.reason))
            elif isinstance(command, StartRollback):
                created = 0
                for job in list(self.jobs.values()):
                    if job.release_id != spec.release_id:
                        continue
                    if needs_rollback(job):
                        key = (job.device_id, command.to_release_id)
                        back = rollback_job(job, command.to_release_id, self.jobs.get(key))
                        if back is not None:
                            self.jobs[key] = back
                            created += 1
                        if job.state not in TERMINAL_STATES:
                            self._apply_job(job, Supersede(command.reason))
                    elif job.state not in TERMINAL_STATES:
                        self._apply_job(job, Cancel(command.reason))
                self.queued.append(RollbackPlanned(created))

    def step(self, wait: timedelta, operator: RolloutEvent | None) -> None:
        self.now += wait
        self._devices_report()
        for job in list(self.jobs.values()):
            if (deadline := expire(job, self.now, self.rollout.spec.retry)) is not None:
                self._apply_job(job, deadline)
        summary = self._summary()
        events = [*self.queued, *([operator] if operator else [])]
        try:
            decision = decide(self.rollout, summary, self.now, events)
        except (InvalidTransitionError, PreconditionError):
            decision = decide(self.rollout, summary, self.now, self.queued)
        self.queued = []
        assert decision.rollout.stage >= self.rollout.stage
        assert decision.rollout.version >= self.rollout.version
        self.rollout = decision.rollout
        self.states.append(self.rollout.state)
        self._execute(decision.commands)
        self._check_one_live_offer_per_device()

    def _check_one_live_offer_per_device(self) -> None:
        live: dict[str, str] = {}
        for (device, release), job in self.jobs.items():
            if job.state in ACTIVE_STATES:
                assert device not in live, f"{device} offered {live[device]} and {release}"
                live[device] = release

    # -- the devices' side --------------------------------------------------------------------

    def _devices_report(self) -> None:
        for job in list(self.jobs.values()):
            device = self.devices[job.device_id]
            if job.state not in ACTIVE_STATES or self.rng.random() > device.online:
                continue
            event = observe(job, self._report(job, device), self.now, self.rollout.spec.retry)
            if event is not None:
                self._apply_job(job, event)

    def _report(self, job: Job, device: SimDevice) -> DeviceReport:
        bad = device.bad and job.release_id == self.rollout.spec.release_id
        roll = self.rng.random()
        previous = self.rollout.spec.previous_release_id

        def report(state: str, step: str, installed: str | None, reason: str = "") -> DeviceReport:
            # Every core alive since its activation: a heartbeat just now, one inference.
            alive = CoreHealth(CoreState.RUNNING, self.now - timedelta(days=1), self.now, 1)
            cores = {"m4-0": alive}
            return DeviceReport(
                AgentState(state), job.workflow_id, installed, self.now, reason, step, cores
            )

        if job.state is S.CANCELLING:  # the device undid the cancelled run
            return report("idle", "stage", previous, "cancelled")
        if job.state is S.SOAKING:
            return report("idle", "confirm", previous if bad and roll < 0.5 else job.release_id)
        if job.state is S.ACTIVATING:
            if bad:
                return report("failed", "activate", previous, "trial-ended")
            return report("idle", "confirm", job.release_id)
        if device.flaky and roll < 0.1:
            return report("failed", "check", previous, "fetch")
        steps = ["check", "verify", "stage", "activate"]
        following = {S.OFFERED: 0, S.DOWNLOADING: 1, S.VERIFYING: 2, S.TRANSFERRING: 3}
        if device.flaky:  # restarts, skipped reports
            return report("deploying", self.rng.choice([*steps, "resume"]), previous)
        return report("deploying", steps[following[job.state]], previous)
