"""The two-person rule at the offer: a production device (a member of any production group,
flagged per candidate by the engine) gets nothing from a rollout without two distinct
approvers, whatever the spec's `production` says; the rollout pauses and asks for approval."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import pytest

from service.domain.commands import Notify, OfferRelease, RequestApproval, WriteDirector
from service.domain.rollout import Rollout, RolloutState, decide
from service.domain.rollout_events import Approve, Resume, Start

from ._world import T0, figures, rollout, summary

R = RolloutState
PROD = frozenset({"d2"})
MIXED = summary(candidates=("d1", "d2", "d3"), production=PROD)


def _offered(commands: tuple[object, ...]) -> list[str]:
    return [c.device_id for c in commands if isinstance(c, OfferRelease)]


HELD = [
    ("running-one-approver", rollout(R.RUNNING), {"ann"}),
    ("running-no-approver", rollout(R.RUNNING), set()),
    ("soaking", rollout(R.SOAKING), {"ann"}),
    ("awaiting-approval", rollout(R.AWAITING_APPROVAL), {"ann"}),
    ("completed-joiner", rollout(R.COMPLETED, stage=1), {"ann"}),
    ("same-operator-twice", rollout(R.RUNNING), ("ann", "ann")),
]


@pytest.mark.parametrize(("before", "approvals"), [h[1:] for h in HELD], ids=[h[0] for h in HELD])
def test_an_offer_to_a_production_device_without_two_approvers_is_held(
    before: Rollout, approvals: Collection[str]
) -> None:
    before = replace(before, approvals=frozenset(approvals))
    decision = decide(before, MIXED, T0)
    assert _offered(decision.commands) == []  # not even the non-production devices this round
    assert not any(isinstance(c, WriteDirector) for c in decision.commands)
    assert decision.rollout.state is R.PAUSED
    assert "d2" in decision.rollout.reason and "2 distinct operators" in decision.rollout.reason
    asks = [c for c in decision.commands if isinstance(c, RequestApproval)]
    assert len(asks) == 1 and asks[0].reason == decision.rollout.reason
    assert any(isinstance(c, Notify) and c.kind == "approval-required" for c in decision.commands)


def test_two_distinct_approvers_clear_production_offers() -> None:
    approved = replace(rollout(R.RUNNING), approvals=frozenset({"ann", "bob"}))
    decision = decide(approved, MIXED, T0)
    assert decision.rollout.state is R.RUNNING
    assert sorted(_offered(decision.commands)) == ["d1", "d2", "d3"]


def test_non_production_candidates_flow_with_one_approver() -> None:
    running = replace(rollout(R.RUNNING), approvals=frozenset({"ann"}))
    decision = decide(running, summary(candidates=("d1", "d3")), T0)
    assert decision.rollout.state is R.RUNNING and _offered(decision.commands) == ["d1", "d3"]


def test_a_rollback_is_not_held() -> None:
    rolling = rollout(R.ROLLING_BACK)
    back = summary(rollback=figures(pending=1), candidates=("d2",), production=PROD)
    decision = decide(rolling, back, T0)
    assert decision.rollout.state is R.ROLLING_BACK and _offered(decision.commands) == ["d2"]


def test_the_flag_the_rollout_was_created_with_does_not_matter() -> None:
    # A spec built from a group whose flag was off (or a non-production group that overlaps a
    # production one) is refused at the offer all the same.
    started = decide(rollout(R.DRAFT, production=False), MIXED, T0, [Start("ann")]).rollout
    assert started.state is R.PAUSED and started.approvals == {"ann"}


def test_a_second_operator_approves_the_pause_then_offers_go() -> None:
    paused = decide(replace(rollout(R.RUNNING), approvals=frozenset({"ann"})), MIXED, T0).rollout
    approved = decide(paused, MIXED, T0, [Approve("bob")]).rollout
    assert approved.state is R.PAUSED and approved.approvals == {"ann", "bob"}
    resumed = decide(approved, MIXED, T0, [Resume("ann")])
    assert resumed.rollout.state is R.RUNNING
    assert sorted(_offered(resumed.commands)) == ["d1", "d2", "d3"]


def test_resume_by_a_second_operator_counts_as_the_approval() -> None:
    paused = decide(replace(rollout(R.RUNNING), approvals=frozenset({"ann"})), MIXED, T0).rollout
    resumed = decide(paused, MIXED, T0, [Resume("bob")])
    assert resumed.rollout.approvals == {"ann", "bob"} and "d2" in _offered(resumed.commands)


def test_the_same_operator_resuming_pauses_again() -> None:
    paused = decide(replace(rollout(R.RUNNING), approvals=frozenset({"ann"})), MIXED, T0).rollout
    again = decide(paused, MIXED, T0, [Resume("ann")])
    assert again.rollout.state is R.PAUSED and _offered(again.commands) == []
