"""The health gate's vocabulary: metrics and their directions, the policy, the verdict.

`service.domain.gates` (the pooled gate) and `service.domain.device_gates` (the per-device gate)
both judge a `GatePolicy` and return a `GateVerdict`; `service.domain.gates` re-exports every
name here, so callers import from there.

Invariants:
- `GatePolicy` refuses values outside its hard limits when built (`GatePolicyError`, naming the
  field and the bounds); `GatePolicy.from_dict` refuses unknown fields.
- A verdict round-trips through `to_dict`/`from_dict`, with finite numbers only; a stored
  document that does not fit raises `GateError`.
- `DEFAULT_DIRECTIONS` is the gates' behaviour before directions existed: lower latency, anomaly
  and device rates are better, a higher score is better; the label shift has no direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from service.domain.directions import Direction
from service.domain.errors import DomainError
from service.domain.stats import Alternative

__all__ = [
    "DEFAULT_DIRECTIONS",
    "DEVICE_METRICS",
    "FailAction",
    "GateError",
    "GatePolicy",
    "GatePolicyError",
    "GateVerdict",
    "Metric",
    "MetricResult",
    "MetricStatus",
    "Outcome",
    "resolve_directions",
    "worse_side",
]


class GateError(DomainError, ValueError):
    """A gate policy or stored verdict that cannot be used."""


class GatePolicyError(GateError):
    """A policy value outside its hard limits; the message names the field and the bounds."""


class FailAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"
    ROLLBACK = "rollback"


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


class MetricStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"
    NOT_APPLICABLE = "not-applicable"


class Metric(StrEnum):
    LATENCY_P95 = "latency-p95"
    CONFIDENCE_MEAN = "confidence-mean"
    ANOMALY_RATE = "anomaly-rate"
    LABEL_SHIFT = "label-shift"
    ERROR_RATE = "error-rate"
    REVERT_RATE = "revert-rate"
    CRASH_RATE = "crash-rate"


# field name -> (metric, lowest exclusive, highest inclusive)
_LIMITS: dict[str, tuple[Metric, float, float]] = {
    "max_latency_p95_increase": (Metric.LATENCY_P95, 0.0, 10.0),
    "max_confidence_drop": (Metric.CONFIDENCE_MEAN, 0.0, 1.0),
    "max_anomaly_rate_increase": (Metric.ANOMALY_RATE, 0.0, 1.0),
    "max_label_psi": (Metric.LABEL_SHIFT, 0.0, 10.0),
    "max_error_rate_increase": (Metric.ERROR_RATE, 0.0, 1.0),
    "max_revert_rate_increase": (Metric.REVERT_RATE, 0.0, 1.0),
    "max_crash_rate_increase": (Metric.CRASH_RATE, 0.0, 1.0),
}
DEVICE_METRICS = (Metric.ERROR_RATE, Metric.REVERT_RATE, Metric.CRASH_RATE)

# Which side of each directional metric is better; the label shift has no side.
DEFAULT_DIRECTIONS: Mapping[Metric, Direction] = {
    Metric.LATENCY_P95: Direction.LOWER_IS_BETTER,
    Metric.CONFIDENCE_MEAN: Direction.HIGHER_IS_BETTER,
    Metric.ANOMALY_RATE: Direction.LOWER_IS_BETTER,
    Metric.ERROR_RATE: Direction.LOWER_IS_BETTER,
    Metric.REVERT_RATE: Direction.LOWER_IS_BETTER,
    Metric.CRASH_RATE: Direction.LOWER_IS_BETTER,
}


def resolve_directions(directions: Mapping[Metric, Direction] | None) -> dict[Metric, Direction]:
    """`DEFAULT_DIRECTIONS` overridden by the caller's; a metric without a side is refused."""
    resolved = dict(DEFAULT_DIRECTIONS)
    for metric, direction in (directions or {}).items():
        if metric not in DEFAULT_DIRECTIONS or not isinstance(direction, Direction):
            raise GateError(f"{metric!r} cannot be given the direction {direction!r}")
        resolved[metric] = direction
    return resolved


def worse_side(direction: Direction) -> Alternative:
    """The alternative that means "the canary is worse" for a metric with this direction."""
    return Alternative.GREATER if direction is Direction.LOWER_IS_BETTER else Alternative.LESS


@dataclass(frozen=True)
class GatePolicy:
    """One rollout stage's gate. A limit of None turns its metric off."""

    stage: str
    alpha: float = 0.01
    min_inferences: int = 1000  # per cohort
    min_devices: int = 5  # per cohort
    max_latency_p95_increase: float | None = 0.20  # relative: 0.2 = p95 up by 20 %
    max_confidence_drop: float | None = 0.05  # absolute, in score units
    max_anomaly_rate_increase: float | None = 0.02  # absolute: 2 percentage points
    max_label_psi: float | None = 0.10
    max_error_rate_increase: float | None = 0.05  # share of devices
    max_revert_rate_increase: float | None = 0.05
    max_crash_rate_increase: float | None = 0.02
    on_fail: FailAction = FailAction.PAUSE

    def __post_init__(self) -> None:
        if not isinstance(self.stage, str) or not 0 < len(self.stage) <= 64:
            raise GatePolicyError("stage must be a name of 1 to 64 characters")
        _check_range("alpha", self.alpha, 0.0, 0.2)
        _check_int("min_inferences", self.min_inferences, 20, 10**9)
        _check_int("min_devices", self.min_devices, 1, 10**7)
        for name, (_, low, high) in _LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                _check_range(name, value, low, high)
        if not self.limits():
            raise GatePolicyError("a gate needs at least one metric limit")
        if not isinstance(self.on_fail, FailAction):
            raise GatePolicyError(f"on_fail must be one of {[a.value for a in FailAction]}")

    def limits(self) -> dict[Metric, float]:
        """The enabled metrics and their practical limits."""
        return {
            metric: value
            for name, (metric, _, _) in _LIMITS.items()
            if (value := getattr(self, name)) is not None
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "on_fail": self.on_fail.value}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> GatePolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(document) - known
        if unknown:
            raise GatePolicyError(f"unknown policy fields: {sorted(unknown)}")
        try:
            action = FailAction(document.get("on_fail", FailAction.PAUSE))
        except ValueError as exc:
            raise GatePolicyError(f"on_fail: {exc}") from exc
        return cls(**{**document, "on_fail": action})


def _check_range(name: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low < value <= high:
        raise GatePolicyError(f"{name} must be a number in ({low}, {high}], not {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise GatePolicyError(f"{name} must be an integer in [{low}, {high}], not {value!r}")


@dataclass(frozen=True)
class MetricResult:
    metric: Metric
    status: MetricStatus
    test: str
    canary: float  # the metric's value per cohort (p95 in us, mean score, rate, PSI's inputs)
    control: float
    effect: float  # how much worse the canary is, in the limit's units
    limit: float
    statistic: float  # z for Mann-Whitney and proportions, chi-square for labels
    p_value: float
    p_adjusted: float  # Holm
    detail: str


@dataclass(frozen=True)
class GateVerdict:
    outcome: Outcome
    stage: str
    action: FailAction | None
    alpha: float
    reasons: tuple[str, ...]  # one line per failed metric
    missing: tuple[str, ...]  # what a WAIT waits for
    metrics: tuple[MetricResult, ...]
    canary_inferences: int
    control_inferences: int
    canary_devices: int
    control_devices: int

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["reasons"], document["missing"] = list(self.reasons), list(self.missing)
        document["metrics"] = [asdict(m) for m in self.metrics]
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> GateVerdict:
        try:
            metrics = tuple(
                MetricResult(
                    **{
                        **m,
                        "metric": Metric(m["metric"]),
                        "status": MetricStatus(m["status"]),
                    }
                )
                for m in document["metrics"]
            )
            action = document["action"]
            return cls(
                **{
                    **document,
                    "outcome": Outcome(document["outcome"]),
                    "action": None if action is None else FailAction(action),
                    "reasons": tuple(document["reasons"]),
                    "missing": tuple(document["missing"]),
                    "metrics": metrics,
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GateError(f"stored verdict is malformed: {exc}") from exc
