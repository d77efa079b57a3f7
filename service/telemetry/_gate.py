"""The real health gate: per-device rollups -> `judge_pairs` -> a stored verdict -> `GateResult`.

For stage `s` of a rollout, from the rollout's jobs (its forward release):
- the stage's own devices are the jobs of stage `s`; those whose jobs are CONFIRMED have soaked
  (a job is confirmed only once it ran the release healthily past its soak time);
- the canary is the soaked devices of stage `s` plus the confirmed devices of the earlier stages
  (context), their rows on the rollout's release from the stage's start;
- the control is the rollout's devices' rows on the previous release from the rollout's start:
  the devices still on the old release, and every device before its update. Its window is the
  longer one because devices leave it as the rollout reaches them: in the last stage the
  devices still on the old release upgrade within seconds, and a control read over the stage's
  window alone could stay short of its minimum for ever.
Windows start exactly at their start: a bucket that began before it is left out (its rows may
have been sent before the stage; rows are in `bucket_ms` buckets of the hub's enqueue time).
Both cohorts are read per device from stored rollups (never raw rows) and split per model slot
(`_pairs.py`). Until `min(policy.min_devices, stage devices)` of the stage's own devices have
soaked, a verdict that is not a FAIL is held as a WAIT whose reason says how many soaked (a
regression already seen on updated devices still FAILs at once).

Every change of verdict (outcome or reason) is stored with its numbers and every slot's
verdict; an unchanged repeat is not (the history holds decisions and changes). The engine
stores the verdict that decided a stage with the stage (`rollout_stages.data["gate"]`).

Group membership of the group rollups is taken at ingest time (`StorageGroups`, refreshed when
a device is unknown to it); the gate itself reads devices by id, whatever their groups were.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.domain.directions import Direction
from service.domain.gates import GatePolicy, GateVerdict, Metric, Outcome
from service.domain.rollout_events import GateResult, Verdict
from service.domain.spec import FailureAction
from service.storage import MAX_PAGE, Rollout, Storage
from service.telemetry._pairs import (
    Directions,
    PairedVerdict,
    RollupRow,
    SlotPair,
    judge_pairs,
    pair_slots,
    pooled_by_device,
)
from service.telemetry._store import TelemetryStore

__all__ = ["StageDevices", "StorageGroups", "TelemetryGate", "gate_policy", "verdict_numbers"]

_CONFIRMED = "confirmed"


def gate_policy(rollout: Rollout, stage: int) -> GatePolicy | None:
    """The stage's own `gate`, else the rollout's `gate`; None when the rollout has no gate.

    Raises:
        GatePolicyError: the stored policy is outside its hard limits.
    """
    stages = rollout.spec.get("stages") or []
    stage_spec: Mapping[str, Any] = stages[stage] if 0 <= stage < len(stages) else {}
    document = stage_spec.get("gate") or rollout.spec.get("gate")
    if not isinstance(document, Mapping):  # none, or "none" (the spec's explicit opt-out)
        return None
    name = str(stage_spec.get("name") or f"stage-{stage}")[:64]
    return GatePolicy.from_dict({"stage": name, **document})


def verdict_numbers(verdict: GateVerdict) -> dict[str, float]:
    numbers: dict[str, float] = {
        "canary_inferences": float(verdict.canary_inferences),
        "control_inferences": float(verdict.control_inferences),
        "canary_devices": float(verdict.canary_devices),
        "control_devices": float(verdict.control_devices),
        "alpha": verdict.alpha,
    }
    for metric in verdict.metrics:
        numbers[f"{metric.metric.value}.effect"] = metric.effect
        numbers[f"{metric.metric.value}.limit"] = metric.limit
        numbers[f"{metric.metric.value}.p_adjusted"] = metric.p_adjusted
    return numbers


@dataclass(frozen=True)
class StageDevices:
    """Who the gate judges for one stage, from the rollout's jobs."""

    stage: int
    total: int  # the stage's devices
    soaked: frozenset[str]  # the stage's devices whose jobs are confirmed
    context: frozenset[str]  # confirmed devices of the earlier stages
    everyone: frozenset[str]  # every device of the rollout (the control's candidates)

    def needed(self, policy: GatePolicy) -> int:
        return min(policy.min_devices, self.total)

    def figures(self, policy: GatePolicy) -> dict[str, float]:
        return {
            "stage_devices": float(self.total),
            "stage_soaked": float(len(self.soaked)),
            "stage_needed": float(self.needed(policy)),
            "context_devices": float(len(self.context)),
        }

    def hold(self, policy: GatePolicy) -> str | None:
        needed = self.needed(policy)
        if len(self.soaked) >= needed:
            return None
        return f"{len(self.soaked)} of {self.total} stage devices soaked (the gate needs {needed})"


class TelemetryGate:
    """The engine's `HealthGate` port over the telemetry store.

    `duty` (a share of time, e.g. 0.2) bounds what the gate costs the engine, which asks every
    tick: after an evaluation that took `t` seconds, the same stage's next `duty`-bounded answer
    is the stored one until `t / duty` has passed on the engine's clock. A small fleet is judged
    every tick; a stage of thousands of devices, whose read takes a second, every few seconds.
    The anytime-valid tests (ADR 0010) make fewer looks no less valid. None: every call judges.
    """

    def __init__(
        self, store: TelemetryStore, storage: Storage, *, duty: float | None = None
    ) -> None:
        if duty is not None and not 0.01 <= duty <= 1.0:
            raise ValueError(f"gate duty {duty} is not within 0.01..1")
        self._store = store
        self._storage = storage
        self._duty = duty
        self._last: dict[tuple[str, int], tuple[str, str]] = {}
        self._models: dict[str, tuple[Directions, int]] = {}
        self._recent: dict[tuple[str, int], tuple[datetime, GateResult | None]] = {}

    def stage_devices(self, rollout: Rollout, stage: int) -> StageDevices:
        total, soaked, context, everyone = 0, set[str](), set[str](), set[str]()
        with self._storage.begin(readonly=True) as uow:
            after: str | None = None
            while True:
                page = uow.jobs.list(
                    rollout.id, release_id=rollout.release_id, after=after, limit=MAX_PAGE
                )
                for job in page.items:
                    everyone.add(job.device_id)
                    confirmed = job.state == _CONFIRMED
                    if job.stage == stage:
                        total += 1
                        if confirmed:
                            soaked.add(job.device_id)
                    elif job.stage < stage and confirmed:
                        context.add(job.device_id)
                after = page.next_after
                if after is None:
                    break
        return StageDevices(
            stage, total, frozenset(soaked), frozenset(context), frozenset(everyone)
        )

    def _rows(
        self, rollout: Rollout, devices: StageDevices, since: datetime, control_since: datetime
    ) -> tuple[dict[str, list[RollupRow]], dict[str, list[RollupRow]]]:
        """Per device: the canary's rows (from `since`) and the control's (from
        `control_since`)."""
        canary_ids = devices.soaked | devices.context
        canary: dict[str, list[RollupRow]] = (
            self._store.device_rollups(
                release_id=rollout.release_id, device_ids=canary_ids, since=since
            )
            if canary_ids
            else {}
        )
        control: dict[str, list[RollupRow]] = (
            self._store.device_rollups(
                release_id=rollout.previous_release_id,
                device_ids=devices.everyone,
                since=min(since, control_since),
            )
            if rollout.previous_release_id and devices.everyone
            else {}
        )
        return canary, control

    def pairs(self, rollout: Rollout, stage: int, since: datetime) -> list[SlotPair]:
        """The stage's canary and control cohorts per model slot (see `_pairs.py`)."""
        devices = self.stage_devices(rollout, stage)
        return pair_slots(*self._rows(rollout, devices, since, _rollout_start(rollout) or since))

    def evaluate(self, rollout: Rollout, stage: int, now: datetime) -> GateResult | None:
        """None when the rollout has no gate or the stage has not started."""
        if self._duty is None:
            return self._judge(rollout, stage, now)
        key = (rollout.id, stage)
        recent = self._recent.get(key)
        if recent is not None and now < recent[0]:
            return recent[1]
        started = time.perf_counter()
        result = self._judge(rollout, stage, now)
        took = time.perf_counter() - started
        self._recent[key] = (now + timedelta(seconds=took / self._duty), result)
        return result

    def _judge(self, rollout: Rollout, stage: int, now: datetime) -> GateResult | None:
        policy = gate_policy(rollout, stage)
        if policy is None:
            return None
        started = self._window_start(rollout, stage)
        if started is None:
            return None
        devices = self.stage_devices(rollout, stage)
        canary, control = self._rows(rollout, devices, started, _rollout_start(rollout) or started)
        pairs = pair_slots(canary, control)
        pooled = None if pairs else (pooled_by_device(canary), pooled_by_device(control))
        directions, slots = self._release_models(rollout.release_id)
        verdict = judge_pairs(
            policy, pairs, pooled=pooled, directions=directions, expected_slots=slots
        ).held(devices.hold(policy), devices.figures(policy))
        self._record(rollout.id, stage, verdict, now)
        brief, key_numbers = verdict.summary()
        return GateResult(
            stage=stage,
            verdict=Verdict(verdict.outcome.value),
            reason=brief,
            numbers=key_numbers,
            action=FailureAction(policy.on_fail.value) if verdict.outcome is Outcome.FAIL else None,
            cohorts=verdict.cohorts(),
        )

    def _release_models(self, release_id: str) -> tuple[Directions, int]:
        """The release's models' metric directions (model id -> directions, from what its
        upload recorded) and how many cores it ships to; cached, a release never changes."""
        known = self._models.get(release_id)
        if known is None:
            with self._storage.begin(readonly=True) as uow:
                manifest = uow.releases.get(release_id).manifest
            details = manifest.get("details") or {}
            directions: dict[str, dict[Metric, Direction]] = {}
            for member in details.values() if isinstance(details, Mapping) else ():
                model_id, direction = member.get("modelId"), member.get("scoreDirection")
                if isinstance(model_id, str) and direction in tuple(Direction):
                    directions[model_id] = {Metric.CONFIDENCE_MEAN: Direction(direction)}
            known = self._models[release_id] = (directions, max(1, len(details)))
        return known

    def _window_start(self, rollout: Rollout, stage: int) -> datetime | None:
        """The stage's recorded start, else the rollout's start (the engine keeps no per-stage
        start: the window then covers every stage so far, the same for both cohorts)."""
        with self._storage.begin(readonly=True) as uow:
            stages = {s.index: s for s in uow.rollouts.stages(rollout.id)}
        if stage in stages and stages[stage].started_at is not None:
            return stages[stage].started_at
        return _rollout_start(rollout)

    def _record(self, rollout_id: str, stage: int, verdict: PairedVerdict, now: datetime) -> None:
        """Store the verdict when it changed (the engine asks every tick; the history keeps the
        changes, and the engine keeps the verdict that decided the stage with the stage)."""
        outcome, reason = verdict.outcome.value, verdict.reason()
        if self._last.get((rollout_id, stage)) == (outcome, reason):
            return
        self._store.record_verdict(
            rollout_id, stage, outcome, reason, verdict.numbers(), verdict.document(), now
        )
        self._last[(rollout_id, stage)] = (outcome, reason)


class StorageGroups:
    """device id -> the ids of the groups it belongs to, from storage: the whole map refreshed
    every `ttl`, and a device the map does not know (a device registered or added since the
    last refresh) looked up at once, so a new member's first batch counts in its groups. A
    device found in no group is remembered as such until the next refresh (one lookup per
    unknown device per `ttl`)."""

    def __init__(
        self,
        storage: Storage,
        *,
        ttl: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._storage, self._ttl, self._clock = storage, ttl, clock
        self._map: dict[str, tuple[str, ...]] = {}
        self._loaded: datetime | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        mapping: dict[str, list[str]] = {}
        with self._storage.begin(readonly=True) as uow:
            for group in uow.groups.list():
                after: str | None = None
                while True:
                    page = uow.groups.members(group.id, after=after, limit=MAX_PAGE)
                    for device in page.items:
                        mapping.setdefault(device.id, []).append(group.id)
                    after = page.next_after
                    if after is None:
                        break
        with self._lock:
            self._map = {device: tuple(groups) for device, groups in mapping.items()}
            self._loaded = self._clock()

    def invalidate(self) -> None:
        """Forget the map: the next call refreshes it (after a group or tag change)."""
        with self._lock:
            self._loaded = None

    def _look_up(self, device_id: str) -> tuple[str, ...]:
        with self._storage.begin(readonly=True) as uow:
            found = tuple(
                group.id
                for group in uow.groups.list()
                if uow.groups.members_among(group.id, [device_id])
            )
        with self._lock:
            self._map[device_id] = found
        return found

    def __call__(self, device_id: str) -> Sequence[str]:
        now = self._clock()
        if self._loaded is None or now - self._loaded >= self._ttl:
            self.refresh()
        found = self._map.get(device_id)
        return self._look_up(device_id) if found is None else found


def _rollout_start(rollout: Rollout) -> datetime | None:
    started = rollout.state_data.get("started_at")
    if not isinstance(started, str):
        return None
    try:
        parsed = datetime.fromisoformat(started)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
