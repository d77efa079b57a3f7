"""The real health gate: stored rollups -> `evaluate_gate` -> a stored verdict -> `GateResult`.

For stage `s` of a rollout on group G: the canary is G's devices whose batches said they ran the
rollout's release, from the bucket in which the stage started (its `rollout_stages` record, else
the rollout's start) to now; the control is G's devices whose batches said they ran the previous
release, from the rollout's start to now. The control's window is the longer one because its
devices leave it as the rollout reaches them: in the last stage, the devices still on the old
release upgrade within seconds, and a control read over the stage's window alone could stay
short of its minimum for ever (the gate would answer WAIT until a human came).
Both cohorts are read from stored rollups (never raw rows) and split per model slot (core, model
id): the new model is compared with the old one on the same core, never pooled with the other
core's model (`_pairs.py`; alpha split across the slots, ADR 0009). Every verdict is stored with
its numbers and every slot's verdict before it is returned; an unchanged repeat is stored once
per `record_every`.

Group membership is taken at ingest time (`StorageGroups`), so a device counts in the groups it
belonged to when its telemetry arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from service.domain.gates import GatePolicy, GateVerdict, Outcome
from service.domain.rollout_events import GateResult, Verdict
from service.domain.rollups import CohortRollup, merge_all
from service.domain.spec import FailureAction
from service.storage import MAX_PAGE, Rollout, Storage
from service.telemetry._pairs import PairedVerdict, RollupRow, SlotPair, judge_pairs, pair_slots
from service.telemetry._store import TelemetryStore

__all__ = ["StorageGroups", "TelemetryGate", "gate_policy", "verdict_numbers"]


def gate_policy(rollout: Rollout, stage: int) -> GatePolicy | None:
    """The stage's own `gate`, else the rollout's `gate`; None when the rollout has no gate.

    Raises:
        GatePolicyError: the stored policy is outside its hard limits.
    """
    stages = rollout.spec.get("stages") or []
    stage_spec: Mapping[str, Any] = stages[stage] if 0 <= stage < len(stages) else {}
    document = stage_spec.get("gate") or rollout.spec.get("gate")
    if not document:
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


class TelemetryGate:
    """The engine's `HealthGate` port over the telemetry store."""

    def __init__(
        self,
        store: TelemetryStore,
        storage: Storage,
        *,
        record_every: timedelta = timedelta(minutes=1),
    ) -> None:
        self._store = store
        self._storage = storage
        self._record_every = record_every
        self._last: dict[tuple[str, int], tuple[str, str, datetime]] = {}

    def cohorts(
        self, rollout: Rollout, since: datetime, until: datetime | None = None
    ) -> tuple[CohortRollup, CohortRollup]:
        canary = self._store.cohort(rollout.group_id, rollout.release_id, since, until)
        control = (
            self._store.cohort(rollout.group_id, rollout.previous_release_id, since, until)
            if rollout.previous_release_id
            else CohortRollup.empty()
        )
        return canary, control

    def _rows(
        self,
        rollout: Rollout,
        since: datetime,
        until: datetime | None,
        control_since: datetime | None = None,
    ) -> tuple[Sequence[RollupRow], Sequence[RollupRow]]:
        """The stored rollup rows of the canary (from `since`) and of the control (from
        `control_since`, else `since`) up to `until`."""
        canary = self._store.rollup_rows(
            group_id=rollout.group_id, release_id=rollout.release_id, since=since, until=until
        )
        control = (
            self._store.rollup_rows(
                group_id=rollout.group_id,
                release_id=rollout.previous_release_id,
                since=min(since, control_since or since),
                until=until,
            )
            if rollout.previous_release_id
            else []
        )
        return canary, control

    def pairs(
        self, rollout: Rollout, since: datetime, until: datetime | None = None
    ) -> list[SlotPair]:
        """The canary and control cohorts per model slot (see `_pairs.py`)."""
        return pair_slots(*self._rows(rollout, since, until))

    def evaluate(self, rollout: Rollout, stage: int, now: datetime) -> GateResult | None:
        """None when the rollout has no gate or the stage has not started."""
        policy = gate_policy(rollout, stage)
        if policy is None:
            return None
        started = self._window_start(rollout, stage)
        if started is None:
            return None
        canary, control = self._rows(rollout, started, None, _rollout_start(rollout))
        pairs = pair_slots(canary, control)
        pooled = (
            None if pairs else (merge_all(r for _, r in canary), merge_all(r for _, r in control))
        )
        verdict = judge_pairs(policy, pairs, pooled=pooled)
        self._record(rollout.id, stage, verdict, now)
        brief, key_numbers = verdict.summary()
        return GateResult(
            stage=stage,
            verdict=Verdict(verdict.outcome.value),
            reason=brief,
            numbers=key_numbers,
            action=FailureAction(policy.on_fail.value) if verdict.outcome is Outcome.FAIL else None,
        )

    def _window_start(self, rollout: Rollout, stage: int) -> datetime | None:
        """The stage's recorded start, else the rollout's start (the engine keeps no per-stage
        start: the window then covers every stage so far, the same for both cohorts)."""
        with self._storage.begin(readonly=True) as uow:
            stages = {s.index: s for s in uow.rollouts.stages(rollout.id)}
        if stage in stages and stages[stage].started_at is not None:
            return stages[stage].started_at
        return _rollout_start(rollout)

    def _record(self, rollout_id: str, stage: int, verdict: PairedVerdict, now: datetime) -> None:
        """Store the verdict when it changed, or `record_every` after the last stored one (the
        engine asks every tick; the history needs the changes and a steady pulse)."""
        last = self._last.get((rollout_id, stage))
        outcome, reason = verdict.outcome.value, verdict.reason()
        if (
            last is not None
            and last[:2] == (outcome, reason)
            and now - last[2] < self._record_every
        ):
            return
        self._store.record_verdict(
            rollout_id, stage, outcome, reason, verdict.numbers(), verdict.document(), now
        )
        self._last[(rollout_id, stage)] = (outcome, reason, now)


class StorageGroups:
    """device id -> the ids of the groups it belongs to, from storage, refreshed every `ttl`."""

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

    def __call__(self, device_id: str) -> Sequence[str]:
        now = self._clock()
        if self._loaded is None or now - self._loaded >= self._ttl:
            self.refresh()
        return self._map.get(device_id, ())


def _rollout_start(rollout: Rollout) -> datetime | None:
    started = rollout.state_data.get("started_at")
    if not isinstance(started, str):
        return None
    try:
        parsed = datetime.fromisoformat(started)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
