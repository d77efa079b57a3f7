"""The crash loop's invariants, checked on snapshots of the database and of what devices saw.

`Invariants.check` is called many times while the engine process runs and after every SIGKILL;
each call compares with the previous snapshot, for every rollout:
- rollout progress is monotonic: stage index, version and the confirmed count never decrease,
  and a final state never changes;
- no job state is lost: every job exists in every snapshot, its attempts never decrease, its
  state never moves back (except PENDING again as a retry, with a retry time) and a terminal
  state never changes; every offer a device saw is backed by its job's committed attempt;
- no device is offered two releases at once: at most one live job per device over all
  rollouts; when a device's desired workflow moves from one rollout's offer to another's, the
  first job is already terminal; a device never sees an older offer again, nor a rollout's
  offer after another rollout's; every offered workflow names its rollout's release;
- no offer without its director entry: the fleet checks the director log when each offer
  arrives (`Fleet.unsigned`).
The device history is read before the database, so the database is never older than it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.domain.jobs import ACTIVE_STATES, TERMINAL_STATES, JobState
from service.storage import MAX_PAGE, DeviceJob, Storage
from tests.system._crashloop.fleet import DEPLOY, Fleet

RANK = {state.value: n for n, state in enumerate(JobState)}
TERMINAL = {state.value for state in TERMINAL_STATES}
LIVE = {state.value for state in ACTIVE_STATES}
FINAL_ROLLOUT = {"completed", "aborted", "rolled_back"}
Progress = tuple[str, int, int, int]  # state, stage, version, confirmed jobs


def all_jobs(storage: Storage, rollout_id: str) -> list[DeviceJob]:
    jobs: list[DeviceJob] = []
    with storage.begin(readonly=True) as uow:
        after: str | None = None
        while True:
            page = uow.jobs.list(rollout_id, after=after, limit=MAX_PAGE)
            jobs.extend(page.items)
            if page.next_after is None:
                return jobs
            after = page.next_after


@dataclass
class Invariants:
    releases: Mapping[str, str]  # rollout id -> its release
    devices: Mapping[str, int]  # rollout id -> its number of jobs
    progress: dict[str, Progress] = field(default_factory=dict)
    jobs: dict[str, dict[str, DeviceJob]] = field(default_factory=dict)
    checks: int = 0

    def check(self, storage: Storage, fleet: Fleet) -> dict[str, str]:
        """Check one snapshot against the previous one; returns each rollout's state."""
        history, _acked, unsigned = fleet.snapshot()
        states: dict[str, str] = {}
        jobs: dict[str, dict[str, DeviceJob]] = {}
        for rollout_id in self.releases:
            with storage.begin(readonly=True) as uow:
                record = uow.rollouts.get(rollout_id)
                confirmed = uow.jobs.count_by_state(rollout_id).get("confirmed", 0)
            stage, version = int(record.state_data["stage"]), int(record.state_data["version"])
            self._progress(rollout_id, (record.state, stage, version, confirmed))
            jobs[rollout_id] = {j.device_id: j for j in all_jobs(storage, rollout_id)}
            self._jobs(rollout_id, jobs[rollout_id])
            states[rollout_id] = record.state
        self._one_live_job(jobs)
        self._offers(history, jobs)
        assert not unsigned, f"offers seen before their director entry: {unsigned[:5]}"
        assert not fleet.errors, f"device-side errors: {fleet.errors[:5]}"
        self.checks += 1
        return states

    def _progress(self, rollout_id: str, now: Progress) -> None:
        state, stage, version, confirmed = now
        before = self.progress.get(rollout_id)
        if before is not None:
            where = f"{rollout_id}: {before} -> {now}"
            assert stage >= before[1], f"stage went back: {where}"
            assert version >= before[2], f"rollout version went back: {where}"
            assert confirmed >= before[3], f"confirmed count went back: {where}"
            if before[0] in FINAL_ROLLOUT:
                assert state == before[0], f"a final rollout changed: {where}"
        self.progress[rollout_id] = now

    def _jobs(self, rollout_id: str, jobs: dict[str, DeviceJob]) -> None:
        expected = self.devices[rollout_id]
        assert len(jobs) == expected, f"{rollout_id}: {len(jobs)} jobs for {expected} devices"
        previous = self.jobs.get(rollout_id, {})
        for device, job in jobs.items():
            old = previous.get(device)
            if old is None:
                continue
            assert job.attempts >= old.attempts, f"{device}: attempts went back: {old} -> {job}"
            if old.state in TERMINAL:
                assert job.state == old.state, f"{device}: terminal state changed: {old} -> {job}"
            elif job.attempts == old.attempts and RANK[job.state] < RANK[old.state]:
                retry = job.state == JobState.PENDING.value and job.next_attempt_at is not None
                assert retry, f"{device}: job state went back: {old.state} -> {job.state}"
        self.jobs[rollout_id] = jobs

    @staticmethod
    def _one_live_job(jobs: dict[str, dict[str, DeviceJob]]) -> None:
        live: Counter[str] = Counter()
        for by_device in jobs.values():
            live.update(d for d, j in by_device.items() if j.state in LIVE)
        doubled = [d for d, n in live.items() if n > 1]
        assert not doubled, f"devices with two live jobs: {doubled[:5]}"

    def _offers(
        self, history: dict[str, list[tuple[str, int]]], jobs: dict[str, dict[str, DeviceJob]]
    ) -> None:
        for device, seen in history.items():
            attempts: dict[str, int] = {}
            order: list[str] = []  # rollouts in the order their offers reached the device
            for wid, action in seen:
                rollout_id, release_id, attempt = wid.rsplit(".", 2)
                assert self.releases.get(rollout_id) == release_id, (
                    f"{device} was offered {wid}, not a workflow of a rollout's release"
                )
                assert int(attempt) >= attempts.get(rollout_id, 0), (
                    f"{device} saw an older offer again: {seen}"
                )
                attempts[rollout_id] = int(attempt)
                if order and order[-1] != rollout_id:
                    assert rollout_id not in order, f"{device} went back to {rollout_id}: {seen}"
                    first = jobs[order[-1]][device]
                    assert first.state in TERMINAL, (
                        f"{device} was offered {wid} while its {order[-1]} job is {first.state}"
                    )
                if not order or order[-1] != rollout_id:
                    order.append(rollout_id)
                if action == DEPLOY:
                    job = jobs[rollout_id][device]
                    assert job.attempts >= int(attempt), (
                        f"{device} was offered {wid} but its job says attempt {job.attempts}"
                    )
