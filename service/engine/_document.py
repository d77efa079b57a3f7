"""The public rollout spec document: the `POST /rollouts` body (see the API contract) <-> spec.

```json
{"id": "ro-1", "release_id": "kws-2", "group_id": "berlin", "previous_release_id": "kws-1",
 "stages": [{"name": "canary", "count": 5, "soak_seconds": 3600}, {"name": "all", "percent": 100,
            "soak_seconds": 0}],
 "success": {"threshold_percent": 95, "advance": "auto", "require_gate": true},
 "failure": {"threshold_percent": 10, "min_devices": 3, "action": "pause"},
 "retry": {"in_progress_timeout_seconds": 3600, "confirm_grace_seconds": 3600, "max_retries": 2,
           "backoff_base_seconds": 60, "backoff_cap_seconds": 21600,
           "offer_timeout_seconds": 86400, "core_silence_seconds": 15},
 "rate": {"base_per_minute": 100, "factor": 2.0, "every": 1000, "increase_on": "succeeded",
          "max_per_minute": 1000},
 "deadlines": {"decide_seconds": 3600, "install_seconds": 900, "action": "pause"},
 "start_at": "2026-11-26T08:00:00+00:00", "windows": [{"cron": "0 2 * * *",
 "duration_minutes": 120}], "gate": {"stage": "all", ...GatePolicy.to_dict()}}
```
Durations are seconds; `windows` take the group's time zone; `production` comes from the
group. Gates are on by default: without a `gate`, a rollout with a `previous_release_id` gets
`DEFAULT_GATE` (one without has no old release to compare with, so no gate), and
`success.require_gate` defaults to true whenever there is a gate. Opting out is explicit:
`"gate": "none"`, or `"require_gate": false` without a `gate` (no gate); with a `gate`,
`"require_gate": false` keeps it advisory (verdicts recorded, a FAIL still trips). Invariants:
- Every refusal is a `SpecError` whose `field` is the document path (`stages[1].percent`,
  `retry.max_retries`, `gate`), so the API can answer 422 naming it.
- Unknown keys are refused (a typo must not silently fall back to a default).
- `spec_from_document(spec_to_document(s), time_zone=z, production=s.production) == s` for a
  spec whose windows are all in zone `z`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from service.domain.errors import SpecError
from service.domain.gates import GateError, GatePolicy
from service.domain.spec import (
    Advance,
    DeadlinePolicy,
    FailureAction,
    FailurePolicy,
    IncreaseOn,
    RatePolicy,
    RetryPolicy,
    RolloutSpec,
    Stage,
    SuccessPolicy,
)
from service.domain.windows import MaintenanceWindow

__all__ = ["DEFAULT_GATE", "NO_GATE", "spec_from_document", "spec_to_document"]

_TOP = frozenset(
    {
        "id",
        "release_id",
        "group_id",
        "previous_release_id",
        "stages",
        "success",
        "failure",
        "retry",
        "rate",
        "deadlines",
        "start_at",
        "windows",
        "gate",
    }
)
_STAGE = frozenset({"name", "percent", "count", "soak_seconds", "gate"})
_SUCCESS = frozenset({"threshold_percent", "advance", "require_gate"})
_FAILURE = frozenset({"threshold_percent", "min_devices", "action"})
_RETRY = frozenset(
    {
        "in_progress_timeout_seconds",
        "confirm_grace_seconds",
        "max_retries",
        "backoff_base_seconds",
        "backoff_cap_seconds",
        "offer_timeout_seconds",
        "core_silence_seconds",
    }
)
_RATE = frozenset({"base_per_minute", "factor", "every", "increase_on", "max_per_minute"})
_DEADLINES = frozenset({"decide_seconds", "install_seconds", "action"})
_WINDOW = frozenset({"cron", "duration_minutes"})
_MISSING: Any = object()


class _Reader:
    """Typed access to one JSON object at `path`, raising SpecError naming the field."""

    def __init__(self, value: object, path: str, keys: frozenset[str]) -> None:
        if not isinstance(value, Mapping):
            raise SpecError(path or "body", "must be an object")
        unknown = sorted(str(k) for k in value if k not in keys)
        if unknown:
            raise SpecError(self._at(path, unknown[0]), "unknown field")
        self._value, self._path = value, path

    @staticmethod
    def _at(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def field(self, key: str) -> str:
        return self._at(self._path, key)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key in self._value and self._value[key] is not None:
            return self._value[key]
        if default is _MISSING:
            raise SpecError(self.field(key), "is required")
        return default

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is not default and not isinstance(value, str):
            raise SpecError(self.field(key), "must be a string")
        return value

    def number(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is not default and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise SpecError(self.field(key), "must be a finite number")
        return value

    def integer(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is not default and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(self.field(key), "must be an integer")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise SpecError(self.field(key), "must be true or false")
        return value

    def seconds(self, key: str, default: timedelta) -> timedelta:
        value = self.number(key, default)
        if isinstance(value, timedelta):
            return value
        try:
            return timedelta(seconds=value)
        except OverflowError as exc:
            raise SpecError(self.field(key), "is out of range") from exc

    def choice(self, key: str, kind: Any, default: Any) -> Any:
        value = self.text(key, default)
        try:
            return kind(value)
        except ValueError as exc:
            allowed = ", ".join(member.value for member in kind)
            raise SpecError(self.field(key), f"must be one of {allowed}") from exc

    def section(self, key: str, keys: frozenset[str]) -> _Reader:
        return _Reader(self.raw(key, {}), self.field(key), keys)

    def items(self, key: str) -> Sequence[Any]:
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise SpecError(self.field(key), "must be a list")
        return value


def _stage(value: object, path: str) -> Stage:
    r = _Reader(value, path, _STAGE)
    if r.raw("gate", None) is not None:
        raise SpecError(r.field("gate"), "per-stage gates are not supported; give one `gate`")
    percent, count = r.number("percent", None), r.integer("count", None)
    return Stage(
        r.text("name"),
        r.seconds("soak_seconds", timedelta(0)),
        float(percent) if percent is not None else None,
        count,
    )


# The gate a rollout gets when its document names none: every metric at its default limit,
# 5 devices and 1000 inferences per cohort, alpha 0.01, and a pause (a human decides) on FAIL.
DEFAULT_GATE = GatePolicy(stage="all")
NO_GATE = "none"  # the document's explicit opt-out


def _gate(value: object, previous: object, required: object) -> GatePolicy | None:
    if value is None:  # the default gate, unless there is nothing to compare or it is opted out
        return DEFAULT_GATE if previous is not None and required is not False else None
    if value == NO_GATE:
        return None
    if not isinstance(value, Mapping):
        raise SpecError("gate", f'must be an object (a gate policy) or "{NO_GATE}"')
    try:
        return GatePolicy.from_dict(value)
    except (GateError, TypeError) as exc:
        raise SpecError("gate", str(exc)) from exc


def _start_at(r: _Reader) -> datetime | None:
    text = r.text("start_at", None)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SpecError("start_at", "must be an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise SpecError("start_at", "must carry a time zone (e.g. Z or +00:00)")
    return moment


def _minutes(value: float, index: int) -> timedelta:
    try:
        return timedelta(minutes=value)
    except OverflowError as exc:
        raise SpecError(f"windows[{index}].duration_minutes", "is out of range") from exc


def _indexed(error: SpecError, path: str) -> SpecError:
    """A stage's or window's own SpecError, renamed to its place in the document."""
    name = error.field.split(".", 1)[-1] if "." in error.field else ""
    return SpecError(f"{path}.{name}" if name else path, error.message)


def spec_from_document(
    document: Mapping[str, Any],
    *,
    time_zone: str = "UTC",
    production: bool = False,
    rollout_id: str | None = None,
) -> RolloutSpec:
    """The spec a `POST /rollouts` body asks for. `time_zone` and `production` are the
    group's; `rollout_id` overrides (or supplies) the body's `id`.

    Raises:
        SpecError: the document is invalid; `field` names the offending field.
    """
    r = _Reader(document, "", _TOP)
    stages: list[Stage] = []
    for i, item in enumerate(r.items("stages")):
        try:
            stages.append(_stage(item, f"stages[{i}]"))
        except SpecError as exc:
            if exc.field.startswith("stages["):
                raise
            raise _indexed(exc, f"stages[{i}]") from exc
    windows: list[MaintenanceWindow] = []
    for i, item in enumerate(r.items("windows")):
        w = _Reader(item, f"windows[{i}]", _WINDOW)
        minutes, cron = w.number("duration_minutes"), w.text("cron")
        try:
            windows.append(MaintenanceWindow.parse(cron, _minutes(minutes, i), time_zone))
        except SpecError as exc:
            if exc.field.startswith("windows["):
                raise
            raise _indexed(exc, f"windows[{i}]") from exc
    s = r.section("success", _SUCCESS)
    f = r.section("failure", _FAILURE)
    t = r.section("retry", _RETRY)
    q = r.section("rate", _RATE)
    d = r.section("deadlines", _DEADLINES)
    gate = _gate(
        r.raw("gate", None), r.raw("previous_release_id", None), s.raw("require_gate", None)
    )
    try:
        spec = _build(r, s, f, t, q, d, stages, windows, gate, production, rollout_id)
    except SpecError as exc:
        name = _RENAMED.get(exc.field, exc.field)
        if name == exc.field:
            raise
        raise SpecError(name, exc.message) from exc
    if spec.success.require_gate and spec.gate is None:
        raise SpecError("success.require_gate", "needs a gate policy (`gate`)")
    return spec


# The domain's field names that differ from the document's.
_RENAMED = {
    "rollout_id": "id",
    "retry.in_progress_timeout": "retry.in_progress_timeout_seconds",
    "retry.confirm_grace": "retry.confirm_grace_seconds",
    "retry.backoff_base": "retry.backoff_base_seconds",
    "retry.backoff_cap": "retry.backoff_cap_seconds",
    "retry.offer_timeout": "retry.offer_timeout_seconds",
    "retry.core_silence": "retry.core_silence_seconds",
    "deadlines.decide": "deadlines.decide_seconds",
    "deadlines.install": "deadlines.install_seconds",
}


def _build(
    r: _Reader,
    s: _Reader,
    f: _Reader,
    t: _Reader,
    q: _Reader,
    d: _Reader,
    stages: list[Stage],
    windows: list[MaintenanceWindow],
    gate: GatePolicy | None,
    production: bool,
    rollout_id: str | None,
) -> RolloutSpec:
    success, failure, retry, rate = SuccessPolicy(), FailurePolicy(), RetryPolicy(), RatePolicy()
    deadlines = DeadlinePolicy()
    return RolloutSpec(
        rollout_id=rollout_id if rollout_id is not None else r.text("id"),
        release_id=r.text("release_id"),
        group_id=r.text("group_id"),
        previous_release_id=r.text("previous_release_id", None),
        production=production,
        stages=tuple(stages),
        success=SuccessPolicy(
            s.number("threshold_percent", success.threshold_percent),
            s.choice("advance", Advance, success.advance.value),
            s.flag("require_gate", gate is not None),
        ),
        failure=FailurePolicy(
            f.number("threshold_percent", failure.threshold_percent),
            f.integer("min_devices", failure.min_devices),
            f.choice("action", FailureAction, failure.action.value),
        ),
        retry=RetryPolicy(
            t.seconds("in_progress_timeout_seconds", retry.in_progress_timeout),
            t.seconds("confirm_grace_seconds", retry.confirm_grace),
            t.integer("max_retries", retry.max_retries),
            t.seconds("backoff_base_seconds", retry.backoff_base),
            t.seconds("backoff_cap_seconds", retry.backoff_cap),
            t.seconds("offer_timeout_seconds", retry.offer_timeout),
            t.seconds("core_silence_seconds", retry.core_silence),
            d.seconds("install_seconds", retry.install_stall),  # a deadline, kept with the job's
        ),
        rate=RatePolicy(
            q.integer("base_per_minute", rate.base_per_minute),
            float(q.number("factor", rate.factor)),
            q.integer("every", rate.every),
            q.choice("increase_on", IncreaseOn, rate.increase_on.value),
            q.integer("max_per_minute", rate.max_per_minute),
        ),
        deadlines=DeadlinePolicy(
            d.seconds("decide_seconds", deadlines.decide),
            d.choice("action", FailureAction, deadlines.action.value),
        ),
        start_at=_start_at(r),
        windows=tuple(windows),
        gate=gate,
    )


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _secs(value: timedelta) -> float | int:
    return _number(value.total_seconds())


def spec_to_document(spec: RolloutSpec) -> dict[str, Any]:
    """The `POST /rollouts` body that gives back `spec` (with its group's zone and flag)."""
    stages: list[dict[str, Any]] = []
    for stage in spec.stages:
        item: dict[str, Any] = {"name": stage.name, "soak_seconds": _secs(stage.soak)}
        if stage.percent is not None:
            item["percent"] = _number(stage.percent)
        else:
            item["count"] = stage.count
        stages.append(item)
    return {
        "id": spec.rollout_id,
        "release_id": spec.release_id,
        "group_id": spec.group_id,
        "previous_release_id": spec.previous_release_id,
        "stages": stages,
        "success": {
            "threshold_percent": _number(spec.success.threshold_percent),
            "advance": spec.success.advance.value,
            "require_gate": spec.success.require_gate,
        },
        "failure": {
            "threshold_percent": _number(spec.failure.threshold_percent),
            "min_devices": spec.failure.min_devices,
            "action": spec.failure.action.value,
        },
        "retry": {
            "in_progress_timeout_seconds": _secs(spec.retry.in_progress_timeout),
            "confirm_grace_seconds": _secs(spec.retry.confirm_grace),
            "max_retries": spec.retry.max_retries,
            "backoff_base_seconds": _secs(spec.retry.backoff_base),
            "backoff_cap_seconds": _secs(spec.retry.backoff_cap),
            "offer_timeout_seconds": _secs(spec.retry.offer_timeout),
            "core_silence_seconds": _secs(spec.retry.core_silence),
        },
        "rate": {
            "base_per_minute": spec.rate.base_per_minute,
            "factor": spec.rate.factor,
            "every": spec.rate.every,
            "increase_on": spec.rate.increase_on.value,
            "max_per_minute": spec.rate.max_per_minute,
        },
        "deadlines": {
            "decide_seconds": _secs(spec.deadlines.decide),
            "install_seconds": _secs(spec.retry.install_stall),
            "action": spec.deadlines.action.value,
        },
        "start_at": spec.start_at.isoformat() if spec.start_at is not None else None,
        "windows": [
            {"cron": w.cron.text, "duration_minutes": _number(w.duration.total_seconds() / 60)}
            for w in spec.windows
        ],
        "gate": spec.gate.to_dict() if spec.gate is not None else NO_GATE,
    }
