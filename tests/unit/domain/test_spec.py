"""The rollout spec refuses every out-of-limit value, naming the field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from service.domain.errors import SpecError
from service.domain.gates import FailAction, GatePolicy
from service.domain.spec import (
    FailureAction,
    FailurePolicy,
    RatePolicy,
    RetryPolicy,
    Stage,
    SuccessPolicy,
)

from ._world import spec

HOUR = timedelta(hours=1)
BAD: list[tuple[str, Callable[[], object], str]] = [
    ("stage-both-sizes", lambda: Stage("a", HOUR, percent=5, count=5), "stage"),
    ("stage-no-size", lambda: Stage("a", HOUR), "stage"),
    ("stage-zero-percent", lambda: Stage("a", HOUR, percent=0), "stage.percent"),
    ("stage-over-100", lambda: Stage("a", HOUR, percent=101), "stage.percent"),
    ("stage-zero-count", lambda: Stage("a", HOUR, count=0), "stage.count"),
    ("stage-negative-soak", lambda: Stage("a", -HOUR, count=1), "stage.soak"),
    ("stage-soak-too-long", lambda: Stage("a", timedelta(days=31), count=1), "stage.soak"),
    ("stage-empty-name", lambda: Stage("", HOUR, count=1), "stage.name"),
    ("success-zero", lambda: SuccessPolicy(0), "success.threshold_percent"),
    ("failure-100", lambda: FailurePolicy(100), "failure.threshold_percent"),
    ("failure-min-zero", lambda: FailurePolicy(5, 0), "failure.min_devices"),
    ("retries-11", lambda: RetryPolicy(max_retries=11), "retry.max_retries"),
    (
        "timeout-zero",
        lambda: RetryPolicy(in_progress_timeout=timedelta(0)),
        "retry.in_progress_timeout",
    ),
    ("grace-too-long", lambda: RetryPolicy(confirm_grace=timedelta(days=8)), "retry.confirm_grace"),
    ("backoff-zero", lambda: RetryPolicy(backoff_base=timedelta(0)), "retry.backoff_base"),
    (
        "cap-below-base",
        lambda: RetryPolicy(backoff_base=HOUR, backoff_cap=timedelta(minutes=1)),
        "retry.backoff_cap",
    ),
    ("rate-zero", lambda: RatePolicy(0), "rate.base_per_minute"),
    ("rate-factor-high", lambda: RatePolicy(factor=5.5), "rate.factor"),
    ("rate-factor-low", lambda: RatePolicy(factor=0.5), "rate.factor"),
    ("rate-every-zero", lambda: RatePolicy(every=0), "rate.every"),
    ("rate-max-below-base", lambda: RatePolicy(100, max_per_minute=50), "rate.max_per_minute"),
    ("rate-max-over-limit", lambda: RatePolicy(max_per_minute=10**6), "rate.max_per_minute"),
    ("rollout-id-slash", lambda: spec_with(rollout_id="a/b"), "rollout_id"),
    ("rollout-id-long", lambda: spec_with(rollout_id="a" * 49), "rollout_id"),
    ("release-id-space", lambda: spec_with(release_id="rel 2"), "release_id"),
    (
        "previous-equals-release",
        lambda: spec_with(previous_release_id="rel-2"),
        "previous_release_id",
    ),
    ("no-stages", lambda: spec_with(stages=()), "stages"),
    ("duplicate-stage-names", lambda: spec_with(stages=(Stage("a", HOUR, count=1),) * 2), "stages"),
    (
        "stages-over-100-percent",
        lambda: spec_with(
            stages=(
                Stage("a", HOUR, percent=60),
                Stage("b", HOUR, percent=40),
                Stage("c", HOUR, percent=1),
            )
        ),
        "stages",
    ),
    (
        "rollback-without-previous",
        lambda: spec(previous=None, action=FailureAction.ROLLBACK),
        "failure.action",
    ),
    ("naive-start", lambda: spec(start_at=datetime(2026, 1, 1)), "start_at"),
    ("gate-not-a-policy", lambda: spec_with(gate={"stage": "all"}), "gate"),
]


def spec_with(**changes: object) -> object:
    base = spec()
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    fields.update(changes)
    return type(base)(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("build", "field"), [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_refused(build: Callable[[], object], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert caught.value.field == field


def test_a_reasonable_spec_is_accepted() -> None:
    built = spec(action=FailureAction.ROLLBACK)
    assert built.failure.action is FailureAction.ROLLBACK and len(built.stages) == 2


def test_one_gate_policy_for_every_stage() -> None:
    policy = GatePolicy(stage="every", on_fail=FailAction.ABORT)
    built = spec_with(gate=policy)
    assert built.gate is policy
    assert spec().gate is None
