"""Properties of the whole domain, checked on generated rollouts driven by the test engine.

Each scenario: a group of simulated devices (some offline, some bad), devices joining midway,
operators sending random commands, time passing in random steps, optional maintenance windows.
The test engine asserts after every step that job progress is monotonic, that no device ever
has two live offers, that attempts stay within the retry budget and that the stage index never
decreases; the tests below check the rate limit, the windows, approvals and termination.
"""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.commands import OfferRelease
from service.domain.jobs import JobState
from service.domain.planner import plan_stages
from service.domain.rollout import Rollout, RolloutState, decide
from service.domain.rollout_events import (
    Abort,
    Approve,
    GateResult,
    NextStage,
    Pause,
    Resume,
    Rollback,
    RolloutEvent,
    Start,
    Verdict,
)
from service.domain.spec import Advance, FailureAction, IncreaseOn, RatePolicy, Stage
from service.domain.windows import MaintenanceWindow, window_open

from ._engine import Sim, SimDevice
from ._world import QUIET, T0, spec

R = RolloutState
MINUTE = timedelta(minutes=1)
OPERATOR_EVENTS: list[RolloutEvent | None] = [
    None,
    Pause("ann"),
    Resume("bob"),
    NextStage("ann"),
    Approve("bob"),
    Abort("ann"),
    Rollback("bob"),
    GateResult(0, Verdict.PASS),
    GateResult(1, Verdict.FAIL, "latency"),
]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Sim, list[tuple[timedelta, RolloutEvent | None, bool]]]:
    windows = draw(
        st.sampled_from(
            [(), (MaintenanceWindow.parse("0 */2 * * *", timedelta(minutes=50), "Europe/Berlin"),)]
        )
    )
    action = draw(st.sampled_from(list(FailureAction)))
    rate = RatePolicy(
        base_per_minute=draw(st.integers(1, 6)),
        factor=draw(st.sampled_from([1.0, 2.0])),
        every=3,
        increase_on=draw(st.sampled_from(list(IncreaseOn))),
        max_per_minute=8,
    )
    advance = draw(st.sampled_from(list(Advance)))
    rollout_spec = spec(windows=windows, action=action, advance=advance)
    rollout_spec = type(rollout_spec)(
        **{
            **{f: getattr(rollout_spec, f) for f in rollout_spec.__dataclass_fields__},
            "rate": rate,
            "stages": (
                Stage("canary", timedelta(minutes=draw(st.integers(0, 20))), count=2),
                Stage("half", timedelta(minutes=10), percent=50),
                Stage("rest", timedelta(minutes=10), percent=100),
            ),
        }
    )
    rng = random.Random(draw(st.integers(0, 2**32)))
    devices = [
        SimDevice(
            f"dev-{i}",
            draw(st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.0])),
            draw(st.integers(0, 5)) == 0,
            draw(st.booleans()),
        )
        for i in range(draw(st.integers(1, 14)))
    ]
    plan = plan_stages(rollout_spec, [d.device_id for d in devices])
    started = decide(Rollout(rollout_spec), QUIET_FOR_3, T0, [Start("ann")]).rollout
    sim = Sim(started, plan, T0, rng)
    for device in devices:
        sim.add_device(device)
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(5, 900).map(lambda s: timedelta(seconds=s)),
                st.sampled_from([*OPERATOR_EVENTS, *[None] * 30]),
                st.integers(0, 9).map(lambda n: n == 0),
            ),
            min_size=30,
            max_size=90,
        )
    )
    return sim, steps


QUIET_FOR_3 = type(QUIET)((*QUIET.stages, QUIET.stages[1]))


def _run(sim: Sim, steps: list[tuple[timedelta, RolloutEvent | None, bool]]) -> None:
    for index, (wait, operator, join) in enumerate(steps):
        if join:
            sim.add_device(SimDevice(f"joiner-{index}", 0.9, False))
        sim.step(wait, operator)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rollout_scenarios_keep_every_invariant(
    scenario: tuple[Sim, list[tuple[timedelta, RolloutEvent | None, bool]]],
) -> None:
    sim, steps = scenario
    _run(sim, steps)
    spec_ = sim.rollout.spec
    forward = [(t, o) for t, o in sim.offers if o.release_id == spec_.release_id]
    # nothing starts outside a maintenance window
    assert all(window_open(spec_.windows, t) for t, _ in forward)
    # the rate limit is never exceeded in any 60 seconds
    times = [t for t, _ in sim.offers]
    for at in times:
        assert sum(1 for t in times if at - MINUTE < t <= at) <= spec_.rate.max_per_minute
    if spec_.rate.factor == 1.0:
        for at, _ in forward:
            assert sum(1 for t, _ in forward if at - MINUTE < t <= at) <= spec_.rate.base_per_minute
    # each (device, workflow) is offered once: a retry is a new workflow
    keys = [(o.device_id, o.workflow_id) for _, o in sim.offers]
    assert len(keys) == len(set(keys))
    # the final states are sticky
    for final in (R.ROLLED_BACK,):
        if final in sim.states:
            assert set(sim.states[sim.states.index(final) :]) == {final}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), devices=st.integers(3, 12))
def test_a_healthy_fleet_completes_without_operators(seed: int, devices: int) -> None:
    rollout_spec = spec()
    plan = plan_stages(rollout_spec, [f"dev-{i}" for i in range(devices)])
    sim = Sim(
        decide(Rollout(rollout_spec), QUIET, T0, [Start("ann")]).rollout,
        plan,
        T0,
        random.Random(seed),
    )
    for i in range(devices):
        sim.add_device(SimDevice(f"dev-{i}", 1.0, False, flaky=False))
    for step in range(400):
        if step == 20:  # a device joins the group mid-rollout
            sim.add_device(SimDevice("joiner", 1.0, False, flaky=False))
        sim.step(timedelta(minutes=5), None)
        if sim.rollout.state is R.COMPLETED and all(
            j.state is JobState.CONFIRMED for j in sim.jobs.values()
        ):
            break
    assert sim.rollout.state is R.COMPLETED
    assert {j.state.value for j in sim.jobs.values()} == {"confirmed"}
    assert ("joiner", "rel-2") in sim.jobs
    offered = [o.device_id for _, o in sim.offers if isinstance(o, OfferRelease)]
    assert sorted(offered) == sorted(set(offered))  # nobody needed a second offer


_APPROVALS = st.lists(
    st.tuples(st.sampled_from(["approve", "start"]), st.sampled_from(["ann", "bob", "cat"])),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(production=st.booleans(), actions=_APPROVALS)
def test_production_never_starts_without_two_distinct_approvals(
    production: bool, actions: list[tuple[str, str]]
) -> None:
    rollout = Rollout(spec(production=production))
    said: set[str] = set()
    for kind, operator in actions:
        event = Approve(operator) if kind == "approve" else Start(operator)
        try:
            rollout = decide(rollout, QUIET, T0, [event]).rollout
        except Exception:
            assert rollout.state is R.DRAFT
            continue
        if kind == "approve" and rollout.state is R.DRAFT:
            said.add(operator)
        if rollout.state is not R.DRAFT:
            assert len(rollout.approvals) >= (2 if production else 1)
            assert rollout.approvals == said | {operator}
            break
