"""The `POST /rollouts` body turned into the domain's `RolloutSpec` (which checks every limit and
raises `SpecError` naming the field)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from service.api._schemas import RolloutIn
from service.domain.errors import CronError, SpecError
from service.domain.spec import (
    Advance,
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

__all__ = ["spec_from_body"]

_SPEC_FIELDS = {f.name for f in dataclasses.fields(RolloutSpec)}


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def spec_from_body(body: RolloutIn, *, production: bool, time_zone: str) -> RolloutSpec:
    """Raises SpecError naming the offending field. Uses the engine's spec codec (one reading
    of the document for the API, the CLI and the tests) when it is there."""
    try:
        from service.engine import spec_from_document  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return _spec_from_model(body, production=production, time_zone=time_zone)
    document = body.model_dump(mode="json", exclude_unset=True)
    spec: RolloutSpec = spec_from_document(document, time_zone=time_zone, production=production)
    return spec


def _spec_from_model(body: RolloutIn, *, production: bool, time_zone: str) -> RolloutSpec:
    windows = []
    for index, window in enumerate(body.windows):
        try:
            windows.append(
                MaintenanceWindow.parse(
                    window.cron, timedelta(minutes=window.duration_minutes), time_zone
                )
            )
        except CronError as exc:
            raise SpecError(f"windows.{index}.cron", str(exc)) from exc
        except SpecError as exc:
            raise SpecError(f"windows.{index}.{exc.field}", exc.message) from exc
    r, rate = body.retry, body.rate
    try:
        retry = RetryPolicy(
            _seconds(r.in_progress_timeout_seconds),
            _seconds(r.confirm_grace_seconds),
            r.max_retries,
            _seconds(r.backoff_base_seconds),
            _seconds(r.backoff_cap_seconds),
        )
    except OverflowError as exc:
        raise SpecError("retry", "durations out of range") from exc
    extra: dict[str, object] = {}
    gate = body.gate or next((s.gate for s in body.stages if s.gate), None)
    if gate is not None and "gate" in _SPEC_FIELDS:
        extra["gate"] = gate
    return RolloutSpec(
        rollout_id=body.id,
        release_id=body.release_id,
        group_id=body.group_id,
        previous_release_id=body.previous_release_id,
        production=production,
        stages=tuple(
            Stage(s.name, _seconds(s.soak_seconds), s.percent, s.count) for s in body.stages
        ),
        success=SuccessPolicy(
            body.success.threshold_percent, Advance(body.success.advance), body.success.require_gate
        ),
        failure=FailurePolicy(
            body.failure.threshold_percent,
            body.failure.min_devices,
            FailureAction(body.failure.action),
        ),
        retry=retry,
        rate=RatePolicy(
            rate.base_per_minute,
            rate.factor,
            rate.every,
            IncreaseOn(rate.increase_on),
            rate.max_per_minute,
        ),
        start_at=body.start_at,
        windows=tuple(windows),
        **extra,  # type: ignore[arg-type]
    )
