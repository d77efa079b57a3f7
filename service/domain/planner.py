"""Planning: which stage each device is in, which devices to offer next, and stage figures.

Stage assignment is a pure function of the rollout id, the device id and a `StagePlan` of hash
bounds computed once when the rollout is planned and saved with it:

    h(device) = first 8 bytes of SHA-256(rollout_id NUL device_id), as an unsigned integer
    stage(device) = number of plan bounds <= h(device)

`plan_stages` sorts the group's hashes and puts each bound at the hash of the first device that
no longer fits in the stages before it, so at planning time stage i holds exactly its size
(`count`, or `ceil(percent * N / 100)`), and the last stage holds the rest.

Invariants:
- Stable under re-planning: the same plan gives every device the same stage after a crash, in any
  order, on any machine (no Python `hash`, no randomness).
- Stable under joining: a device that joins the group later is placed by the same bounds and
  moves nobody; joiners spread over the stages in proportion to the hash ranges (so a joiner
  whose stage already started is offered at once, the others wait for their stage).
- `OfferLedger.budget` never lets more than `rate` offers fall in any 60-second interval, given a
  non-decreasing `now`; offers are counted in whole-second buckets (at most 61 kept).
- `select_offers` never returns a device twice.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime

from service.domain.jobs import ACTIVE_STATES, FAILURE_STATES, Job, JobState
from service.domain.spec import RolloutSpec

__all__ = [
    "Candidate",
    "OfferLedger",
    "StageFigures",
    "StagePlan",
    "figures_by_stage",
    "plan_from_hash_set",
    "plan_from_hashes",
    "plan_jobs",
    "plan_stages",
    "select_offers",
    "stage_hash",
]

_HASH_SPACE = 1 << 64
_PARTIAL_SORT_SHARE = 16  # `plan_from_hash_set` selects instead of sorting below 1/16 of them
_WINDOW_SECONDS = 60


def stage_hash(rollout_id: str, device_id: str) -> int:
    """A stable 64-bit hash of the pair, uniform enough to split a fleet into stages."""
    digest = hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class StagePlan:
    """Exclusive upper hash bounds of every stage but the last (saved with the rollout)."""

    rollout_id: str
    bounds: tuple[int, ...]
    planned_devices: int

    def stage_of(self, device_id: str) -> int:
        return bisect_right(self.bounds, stage_hash(self.rollout_id, device_id))

    def assign(self, device_ids: Iterable[str]) -> Iterator[tuple[str, int]]:
        """`(device_id, stage)` pairs, the same as `stage_of`, fast enough for a bulk insert of
        a million rows (the hash prefix is computed once)."""
        prefix = hashlib.sha256(f"{self.rollout_id}\0".encode())
        bounds, from_bytes = self.bounds, int.from_bytes
        for device_id in device_ids:
            digest = prefix.copy()
            digest.update(device_id.encode())
            yield device_id, bisect_right(bounds, from_bytes(digest.digest()[:8], "big"))


def plan_stages(spec: RolloutSpec, device_ids: Iterable[str]) -> StagePlan:
    """Plan `spec`'s stages over the group's current members (duplicates count once)."""
    prefix, from_bytes = hashlib.sha256(f"{spec.rollout_id}\0".encode()), int.from_bytes
    unique: set[int] = set()
    for device_id in set(device_ids):
        digest = prefix.copy()
        digest.update(device_id.encode())
        unique.add(from_bytes(digest.digest()[:8], "big"))
    return plan_from_hashes(spec, unique)


def plan_from_hashes(spec: RolloutSpec, device_hashes: Iterable[int]) -> StagePlan:
    """`plan_stages` for members given by their `stage_hash` (a caller that already hashed a
    million devices does not hash them twice). Equal hashes count once."""
    hashes = sorted(set(device_hashes))
    total = len(hashes)
    bounds: list[int] = []
    placed = 0
    for stage in spec.stages[:-1]:
        if stage.count is not None:
            size = stage.count
        else:
            assert stage.percent is not None
            size = max(1, math.ceil(stage.percent * total / 100)) if total else 0
        placed = min(total, placed + size)
        bounds.append(hashes[placed] if placed < total else _HASH_SPACE)
    return StagePlan(spec.rollout_id, tuple(bounds), total)


def plan_from_hash_set(spec: RolloutSpec, device_hashes: AbstractSet[int]) -> StagePlan:
    """`plan_from_hashes` for a set of hashes, without sorting all of them when every bound
    falls among the smallest (a first stage of 1,000 devices in a fleet of a million needs the
    1,001 smallest hashes, not a sorted million). Equal to `plan_from_hashes` on the same set."""
    total = len(device_hashes)
    positions = _bound_positions(spec, total)
    reach = max((p + 1 for p in positions if p < total), default=0)
    if reach * _PARTIAL_SORT_SHARE <= total:
        ordered = heapq.nsmallest(reach, device_hashes)
    else:
        ordered = sorted(device_hashes)
    bounds = tuple(ordered[p] if p < total else _HASH_SPACE for p in positions)
    return StagePlan(spec.rollout_id, bounds, total)


def _bound_positions(spec: RolloutSpec, total: int) -> list[int]:
    """Per stage but the last, the rank (in sorted hashes) of its exclusive upper bound, as
    `plan_from_hashes` places them; `total` means "no device left": the bound is 2**64."""
    positions: list[int] = []
    placed = 0
    for stage in spec.stages[:-1]:
        if stage.count is not None:
            size = stage.count
        else:
            assert stage.percent is not None
            size = max(1, math.ceil(stage.percent * total / 100)) if total else 0
        placed = min(total, placed + size)
        positions.append(placed)
    return positions


def plan_jobs(spec: RolloutSpec, plan: StagePlan, device_ids: Iterable[str]) -> Iterator[Job]:
    """PENDING jobs for `device_ids` (at planning time, or as they join the group)."""
    for device_id, stage in plan.assign(device_ids):
        yield Job(spec.rollout_id, device_id, spec.release_id, stage, spec.stages[stage].soak)


@dataclass(frozen=True)
class StageFigures:
    """How many jobs of a stage (or of the rollback) are in each state."""

    counts: Mapping[JobState, int]

    @classmethod
    def of(cls, states: Iterable[JobState]) -> StageFigures:
        return cls(dict(Counter(states)))

    def __add__(self, other: StageFigures) -> StageFigures:
        return StageFigures(dict(Counter(self.counts) + Counter(other.counts)))

    def _sum(self, states: Iterable[JobState]) -> int:
        return sum(self.counts.get(state, 0) for state in states)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        return self.counts.get(JobState.PENDING, 0)

    @property
    def in_progress(self) -> int:
        """Offered and not yet activated, or activating."""
        return self._sum(ACTIVE_STATES - {JobState.SOAKING})

    @property
    def soaking(self) -> int:
        return self.counts.get(JobState.SOAKING, 0)

    @property
    def confirmed(self) -> int:
        return self.counts.get(JobState.CONFIRMED, 0)

    @property
    def failed(self) -> int:
        """Final failures: rejected, failed, reverted, timed out (retries pending excluded)."""
        return self._sum(FAILURE_STATES)

    @property
    def finished(self) -> int:
        return self.confirmed + self.failed

    @property
    def notified(self) -> int:
        """Jobs that left PENDING for good or for now (an approximation of devices offered)."""
        return self.total - self.pending - self.counts.get(JobState.CANCELLED, 0)

    def percent(self, part: int) -> float:
        """`part` as a percentage of the stage; an empty stage counts as 100%."""
        return 100.0 * part / self.total if self.total else 100.0


def figures_by_stage(jobs: Iterable[Job], stages: int) -> tuple[StageFigures, ...]:
    """Figures per stage for in-memory jobs (the engine computes the same with GROUP BY)."""
    counters = [Counter[JobState]() for _ in range(stages)]
    for job in jobs:
        counters[job.stage][job.state] += 1
    return tuple(StageFigures(dict(c)) for c in counters)


@dataclass(frozen=True)
class Candidate:
    """A PENDING job the engine may offer now: its stage started, its retry wait is over.
    `production`: the device is a member of a production group (the engine looks it up at
    every offer), so offering needs a second operator's approval."""

    device_id: str
    next_attempt: int
    production: bool = False


def select_offers(candidates: Sequence[Candidate], budget: int) -> list[Candidate]:
    """The first `budget` candidates, each device at most once, in the engine's order."""
    chosen: list[Candidate] = []
    seen: set[str] = set()
    for candidate in candidates:
        if len(chosen) >= budget:
            break
        if candidate.device_id not in seen:
            seen.add(candidate.device_id)
            chosen.append(candidate)
    return chosen


@dataclass(frozen=True)
class OfferLedger:
    """Offers per whole second over the last minute, for the rate limit."""

    buckets: tuple[tuple[int, int], ...] = ()  # (POSIX second, offers), oldest first

    def used(self, now: datetime) -> int:
        floor = math.floor(now.timestamp()) - _WINDOW_SECONDS
        return sum(count for second, count in self.buckets if second >= floor)

    def budget(self, now: datetime, rate: int) -> int:
        """How many more offers fit at `now` under `rate` offers per minute."""
        return max(0, rate - self.used(now))

    def record(self, now: datetime, offers: int) -> OfferLedger:
        if offers <= 0:
            return self
        second = math.floor(now.timestamp())
        kept = {s: c for s, c in self.buckets if s >= second - _WINDOW_SECONDS}
        kept[second] = kept.get(second, 0) + offers
        return OfferLedger(tuple(sorted(kept.items())))
