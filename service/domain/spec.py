"""The rollout spec: what an operator asks for, validated against hard limits.

A spec is immutable once the rollout is created (like a release). Every field has a hard limit so
that a hostile or mistaken request cannot make the engine do unbounded work; the
`__post_init__` methods check them all and raises `SpecError` naming the field.

Invariants:
- At least one stage; the last stage always takes every device left (its size only matters for
  the stages before it), so every device of the group has a stage.
- A failure action `ROLLBACK` (or an operator rollback) needs `previous_release_id`.
- `gate`, when given, is one health-gate policy for every stage; `success.require_gate` makes a
  stage wait for a PASS verdict before it advances.
- `RatePolicy.rate(n)` is non-decreasing in `n`, at least `base_per_minute` and at most
  `max_per_minute`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from service.domain.errors import SpecError
from service.domain.gates import GatePolicy
from service.domain.windows import MaintenanceWindow

__all__ = [
    "MAX_RATE_PER_MINUTE",
    "MAX_STAGES",
    "Advance",
    "DeadlinePolicy",
    "FailureAction",
    "FailurePolicy",
    "IncreaseOn",
    "RatePolicy",
    "RetryPolicy",
    "RolloutSpec",
    "Stage",
    "SuccessPolicy",
]

MAX_STAGES = 50
MAX_WINDOWS = 10
MAX_SOAK = timedelta(days=30)
MAX_STAGE_COUNT = 10_000_000
MAX_RATE_PER_MINUTE = 100_000
MAX_RETRIES = 10
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise SpecError(name, message)


def check_id(value: str, name: str) -> None:
    """Ids end up in workflow ids (at most 128 chars on the wire): 1-48 safe characters."""
    _check(
        isinstance(value, str) and _ID.fullmatch(value) is not None,
        name,
        "must be 1-48 characters of letters, digits, '.', '_' or '-', starting alphanumeric",
    )


@dataclass(frozen=True)
class Stage:
    """A stage: `count` devices or `percent` of the group (exactly one), then `soak`."""

    name: str
    soak: timedelta
    percent: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        _check(0 < len(self.name) <= 64, "stage.name", "must be 1-64 characters")
        _check((self.percent is None) != (self.count is None), "stage", "give percent or count")
        if self.percent is not None:
            _check(0 < self.percent <= 100, "stage.percent", "must be in (0, 100]")
        if self.count is not None:
            _check(1 <= self.count <= MAX_STAGE_COUNT, "stage.count", "must be 1..10,000,000")
        _check(timedelta(0) <= self.soak <= MAX_SOAK, "stage.soak", "must be 0..30 days")


class Advance(StrEnum):
    AUTO = "auto"  # advance as soon as the stage succeeded and soaked
    APPROVAL = "approval"  # then wait for an operator (hawkBit's successAction PAUSE)


@dataclass(frozen=True)
class SuccessPolicy:
    """A stage succeeds when `threshold_percent` of its devices are confirmed after its soak."""

    threshold_percent: float = 100.0
    advance: Advance = Advance.AUTO
    require_gate: bool = False  # also wait for a PASS health verdict on the stage

    def __post_init__(self) -> None:
        _check(
            0 < self.threshold_percent <= 100, "success.threshold_percent", "must be in (0, 100]"
        )


class FailureAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class FailurePolicy:
    """Trip when failures exceed `threshold_percent` of finished devices, once at least
    `min_devices` have finished (AWS abortConfig's thresholdPercentage and
    minNumberOfExecutedThings)."""

    threshold_percent: float = 10.0
    min_devices: int = 1
    action: FailureAction = FailureAction.PAUSE

    def __post_init__(self) -> None:
        _check(
            0 <= self.threshold_percent < 100, "failure.threshold_percent", "must be in [0, 100)"
        )
        _check(1 <= self.min_devices <= MAX_STAGE_COUNT, "failure.min_devices", "must be >= 1")


@dataclass(frozen=True)
class DeadlinePolicy:
    """A stage never waits for ever: when it can no longer reach its success threshold (too many
    of its devices finished without confirming), or when `decide` has passed after its soak and
    confirm grace without the confirmations or the PASS verdict it needs, the rollout takes
    `action` and says why (pause asks a human; abort and rollback end it)."""

    decide: timedelta = timedelta(hours=1)
    action: FailureAction = FailureAction.PAUSE

    def __post_init__(self) -> None:
        _check(
            timedelta(seconds=1) <= self.decide <= timedelta(days=7),
            "deadlines.decide",
            "must be 1 second..7 days",
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Per-device timeout and retries with exponential back-off."""

    in_progress_timeout: timedelta = timedelta(hours=1)
    confirm_grace: timedelta = timedelta(hours=1)  # after the soak, for the confirming report
    max_retries: int = 2
    backoff_base: timedelta = timedelta(minutes=1)
    backoff_cap: timedelta = timedelta(hours=6)
    offer_timeout: timedelta = timedelta(days=1)  # an offer no progress report answered
    # A core whose last reported heartbeat is older than this is not alive (3 heartbeats of
    # the simulated cores' 5 s period): its job is not confirmed.
    core_silence: timedelta = timedelta(seconds=15)
    # A job in progress whose device reports no new phase for this long is stalled (the
    # document's `deadlines.install_seconds`, beside the stage's `decide_seconds`).
    install_stall: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        week = timedelta(days=7)
        _check(
            timedelta(minutes=1) <= self.offer_timeout <= timedelta(days=30),
            "retry.offer_timeout",
            "must be 1 minute..30 days",
        )
        _check(
            timedelta(minutes=1) <= self.in_progress_timeout <= week,
            "retry.in_progress_timeout",
            "must be 1 minute..7 days",
        )
        _check(
            timedelta(minutes=1) <= self.confirm_grace <= week,
            "retry.confirm_grace",
            "must be 1 minute..7 days",
        )
        _check(
            timedelta(seconds=1) <= self.core_silence <= timedelta(hours=1),
            "retry.core_silence",
            "must be 1 second..1 hour",
        )
        _check(
            timedelta(minutes=1) <= self.install_stall <= timedelta(days=1),
            "deadlines.install",
            "must be 1 minute..1 day",
        )
        _check(0 <= self.max_retries <= MAX_RETRIES, "retry.max_retries", "must be 0..10")
        _check(
            timedelta(seconds=1) <= self.backoff_base <= timedelta(days=1),
            "retry.backoff_base",
            "must be 1 second..1 day",
        )
        _check(
            self.backoff_base <= self.backoff_cap <= week,
            "retry.backoff_cap",
            "must be backoff_base..7 days",
        )

    def backoff(self, attempt: int) -> timedelta:
        """The wait before offer number `attempt + 1`, after `attempt` (>= 1) failed offers."""
        doublings = min(max(attempt - 1, 0), 40)
        wait: timedelta = self.backoff_base * (2**doublings)
        return min(wait, self.backoff_cap)


class IncreaseOn(StrEnum):
    NOTIFIED = "notified"  # devices offered so far (AWS numberOfNotifiedThings)
    SUCCEEDED = "succeeded"  # devices confirmed so far (AWS numberOfSucceededThings)


@dataclass(frozen=True)
class RatePolicy:
    """Offers per minute: `base`, multiplied by `factor` every `every` devices, up to `max`."""

    base_per_minute: int = 100
    factor: float = 1.0
    every: int = 1000
    increase_on: IncreaseOn = IncreaseOn.SUCCEEDED
    max_per_minute: int = 1000

    def __post_init__(self) -> None:
        _check(
            1 <= self.base_per_minute <= MAX_RATE_PER_MINUTE,
            "rate.base_per_minute",
            f"must be 1..{MAX_RATE_PER_MINUTE}",
        )
        _check(1.0 <= self.factor <= 5.0, "rate.factor", "must be 1.0..5.0")
        _check(1 <= self.every <= MAX_STAGE_COUNT, "rate.every", "must be >= 1")
        _check(
            self.base_per_minute <= self.max_per_minute <= MAX_RATE_PER_MINUTE,
            "rate.max_per_minute",
            f"must be base_per_minute..{MAX_RATE_PER_MINUTE}",
        )

    def rate(self, devices: int) -> int:
        """Offers allowed per minute after `devices` notified or succeeded devices."""
        steps = max(devices, 0) // self.every
        if self.factor == 1.0 or steps == 0:
            return self.base_per_minute
        if steps > 64:  # 1.1 ** 64 > 400: already past any max
            return self.max_per_minute
        return min(self.max_per_minute, int(self.base_per_minute * self.factor**steps))


@dataclass(frozen=True)
class RolloutSpec:
    """Everything an operator fixes when creating a rollout of `release_id` to `group_id`."""

    rollout_id: str
    release_id: str
    group_id: str
    stages: tuple[Stage, ...]
    previous_release_id: str | None = None
    production: bool = False
    success: SuccessPolicy = field(default_factory=SuccessPolicy)
    failure: FailurePolicy = field(default_factory=FailurePolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate: RatePolicy = field(default_factory=RatePolicy)
    deadlines: DeadlinePolicy = field(default_factory=DeadlinePolicy)
    start_at: datetime | None = None
    windows: tuple[MaintenanceWindow, ...] = ()
    gate: GatePolicy | None = None  # one health-gate policy for every stage (telemetry judges)

    def __post_init__(self) -> None:
        check_id(self.rollout_id, "rollout_id")
        check_id(self.release_id, "release_id")
        check_id(self.group_id, "group_id")
        if self.previous_release_id is not None:
            check_id(self.previous_release_id, "previous_release_id")
            _check(
                self.previous_release_id != self.release_id,
                "previous_release_id",
                "must differ from release_id",
            )
        _check(1 <= len(self.stages) <= MAX_STAGES, "stages", f"must be 1..{MAX_STAGES} stages")
        _check(
            len({s.name for s in self.stages}) == len(self.stages), "stages", "names must differ"
        )
        percent = sum(s.percent or 0 for s in self.stages[:-1])
        _check(percent < 100, "stages", "the stages before the last take under 100% together")
        _check(
            self.failure.action is not FailureAction.ROLLBACK
            or self.previous_release_id is not None,
            "failure.action",
            "rollback needs previous_release_id",
        )
        _check(
            self.deadlines.action is not FailureAction.ROLLBACK
            or self.previous_release_id is not None,
            "deadlines.action",
            "rollback needs previous_release_id",
        )
        if self.start_at is not None:
            _check(self.start_at.tzinfo is not None, "start_at", "must be timezone-aware")
        _check(len(self.windows) <= MAX_WINDOWS, "windows", f"at most {MAX_WINDOWS}")
        _check(
            self.gate is None or isinstance(self.gate, GatePolicy),
            "gate",
            "must be a GatePolicy",
        )
