"""Planning: stable stage assignment, exact stage sizes, figures, offer selection, rate ledger."""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.jobs import Job, JobState
from service.domain.planner import (
    Candidate,
    OfferLedger,
    StageFigures,
    figures_by_stage,
    plan_from_hashes,
    plan_jobs,
    plan_stages,
    select_offers,
    stage_hash,
)
from service.domain.spec import IncreaseOn, RatePolicy, Stage

from ._world import T0, spec

HOUR = timedelta(hours=1)


def _stages(*sizes: tuple[str, float]) -> tuple[Stage, ...]:
    return tuple(
        Stage(f"s{i}", HOUR, **({"count": int(v)} if kind == "count" else {"percent": v}))
        for i, (kind, v) in enumerate(sizes)
    )


def test_stage_hash_is_the_documented_sha256_prefix() -> None:
    digest = hashlib.sha256(b"r1\x00dev-1").digest()
    assert stage_hash("r1", "dev-1") == int.from_bytes(digest[:8], "big")
    assert stage_hash("r1", "dev-1") != stage_hash("r2", "dev-1")


def _sizes(plan_spec_stages: tuple[Stage, ...], devices: list[str]) -> list[int]:
    rollout_spec = spec(stages=plan_spec_stages)
    plan = plan_stages(rollout_spec, devices)
    sizes = [0] * len(plan_spec_stages)
    for device in devices:
        sizes[plan.stage_of(device)] += 1
    return sizes


@pytest.mark.parametrize(
    ("stages", "devices", "expected"),
    [
        (
            _stages(("count", 3), ("count", 30), ("percent", 10), ("percent", 100)),
            1000,
            [3, 30, 100, 867],
        ),
        (_stages(("percent", 10), ("percent", 100)), 3, [1, 2]),
        (_stages(("count", 5), ("count", 5), ("percent", 100)), 4, [4, 0, 0]),
        (_stages(("percent", 1), ("percent", 100)), 0, [0, 0]),
        (
            _stages(
                ("percent", 100),
            ),
            7,
            [7],
        ),
    ],
    ids=[
        "3-30-10pc-rest",
        "percent-rounds-up",
        "group-smaller-than-stages",
        "empty-group",
        "single-stage",
    ],
)
def test_stage_sizes_are_exact_at_planning(
    stages: tuple[Stage, ...], devices: int, expected: list[int]
) -> None:
    assert _sizes(stages, [f"dev-{i}" for i in range(devices)]) == expected


@settings(max_examples=40, deadline=None)
@given(
    devices=st.sets(st.text("abcdef0123456789-", min_size=1, max_size=12), max_size=300),
    counts=st.lists(st.integers(1, 50), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_plan_is_stable_under_replanning_and_order(
    devices: set[str], counts: list[int], seed: int
) -> None:
    stages = _stages(*[("count", c) for c in counts], ("percent", 100))
    rollout_spec = spec(stages=stages)
    shuffled = sorted(devices)
    random.Random(seed).shuffle(shuffled)
    first = plan_stages(rollout_spec, sorted(devices))
    again = plan_stages(rollout_spec, shuffled + shuffled[:5])  # another order, duplicates
    assert first == again
    assert all(first.stage_of(d) == again.stage_of(d) for d in devices)
    assert dict(first.assign(shuffled)) == {d: first.stage_of(d) for d in devices}
    expected, left = [], len(devices)
    for count in counts:
        expected.append(min(count, left))
        left -= expected[-1]
    assert _sizes(stages, sorted(devices)) == [*expected, left]


@settings(max_examples=30, deadline=None)
@given(
    members=st.sets(st.integers(0, 10_000), min_size=1, max_size=200),
    joiners=st.sets(st.integers(10_001, 20_000), max_size=100),
)
def test_joiners_move_nobody_and_get_a_stage(members: set[int], joiners: set[int]) -> None:
    rollout_spec = spec(stages=_stages(("count", 5), ("percent", 30), ("percent", 100)))
    group = [f"dev-{m}" for m in members]
    plan = plan_stages(rollout_spec, group)
    before = {job.device_id: job.stage for job in plan_jobs(rollout_spec, plan, group)}
    grown = group + [f"dev-{j}" for j in joiners]
    after = {job.device_id: job.stage for job in plan_jobs(rollout_spec, plan, grown)}
    assert {d: after[d] for d in before} == before
    assert all(0 <= after[d] < 3 for d in after)


def test_plan_jobs_builds_pending_jobs_with_the_stage_soak() -> None:
    rollout_spec = spec(
        stages=(Stage("a", timedelta(minutes=5), count=1), Stage("b", HOUR, percent=100))
    )
    plan = plan_stages(rollout_spec, ["x", "y"])
    jobs = sorted(plan_jobs(rollout_spec, plan, ["x", "y"]), key=lambda j: j.stage)
    assert [(j.stage, j.soak, j.state) for j in jobs] == [
        (0, timedelta(minutes=5), JobState.PENDING),
        (1, HOUR, JobState.PENDING),
    ]


def test_figures() -> None:
    jobs = [
        Job("r1", f"d{i}", "rel-2", i % 2, HOUR, state=state)
        for i, state in enumerate(
            [
                JobState.PENDING,
                JobState.OFFERED,
                JobState.SOAKING,
                JobState.CONFIRMED,
                JobState.REJECTED,
                JobState.TIMED_OUT,
                JobState.CANCELLED,
                JobState.ACTIVATING,
            ]
        )
    ]
    first, second = figures_by_stage(jobs, 2)
    both = first + second
    assert (both.total, both.pending, both.in_progress, both.soaking, both.confirmed) == (
        8,
        1,
        2,
        1,
        1,
    )
    assert (both.failed, both.finished, both.notified) == (2, 3, 6)
    assert both.percent(both.confirmed) == 12.5
    assert StageFigures({}).percent(0) == 100.0


def test_select_offers_takes_each_device_once_in_order() -> None:
    candidates = [Candidate("a", 1), Candidate("a", 2), Candidate("b", 1), Candidate("c", 1)]
    assert [c.device_id for c in select_offers(candidates, 2)] == ["a", "b"]
    assert select_offers(candidates, 0) == []


@settings(max_examples=60, deadline=None)
@given(
    rate=st.integers(1, 50),
    steps=st.lists(
        st.tuples(st.floats(0, 30, allow_nan=False), st.integers(0, 60)), min_size=1, max_size=80
    ),
)
def test_ledger_never_exceeds_the_rate_in_any_minute(
    rate: int, steps: list[tuple[float, int]]
) -> None:
    ledger, now, offers = OfferLedger(), T0, []
    for wait, wanted in steps:
        now += timedelta(seconds=wait)
        granted = min(wanted, ledger.budget(now, rate))
        ledger = ledger.record(now, granted)
        offers += [now] * granted
        assert len(ledger.buckets) <= 61
    for at in offers:
        in_minute = sum(1 for t in offers if at - timedelta(seconds=60) < t <= at)
        assert in_minute <= rate


@settings(max_examples=60, deadline=None)
@given(
    base=st.integers(1, 1000),
    factor=st.floats(1.0, 5.0),
    every=st.integers(1, 1000),
    extra=st.integers(0, 5000),
    devices=st.integers(0, 10**7),
    more=st.integers(0, 10**6),
)
def test_rate_grows_monotonically_within_bounds(
    base: int, factor: float, every: int, extra: int, devices: int, more: int
) -> None:
    policy = RatePolicy(base, factor, every, IncreaseOn.SUCCEEDED, base + extra)
    assert base <= policy.rate(devices) <= policy.rate(devices + more) <= base + extra


def test_rate_doubles_like_aws_exponential_rollout() -> None:
    policy = RatePolicy(50, 2.0, 1000, IncreaseOn.NOTIFIED, 1000)
    assert [policy.rate(n) for n in (0, 999, 1000, 2000, 3000, 5000)] == [
        50,
        50,
        100,
        200,
        400,
        1000,
    ]


def test_plan_from_hashes_is_plan_stages_without_rehashing() -> None:
    members = [f"dev-{n}" for n in range(57)]
    hashes = [stage_hash("r1", d) for d in members]
    assert plan_from_hashes(spec(), hashes + hashes[:5]) == plan_stages(spec(), members)
