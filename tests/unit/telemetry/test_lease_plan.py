"""The pure lease planner: fair shares, and workers that converge on a fair split by taking
turns (as they do every ttl / 3), whatever the order of their turns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.telemetry import LeaseConfig, SourceConfigError
from service.telemetry._leases import Lease, fair_share, plan_leases

TTL_MS = 30_000


@given(st.integers(1, 64), st.sets(st.text("abcdef", min_size=1, max_size=4), min_size=1))
def test_fair_shares_add_up_to_every_partition_and_differ_by_at_most_one(
    partitions: int, live: set[str]
) -> None:
    shares = [fair_share(partitions, live, w) for w in live]
    assert sum(shares) == partitions
    assert max(shares) - min(shares) <= 1


def _turn(rows: dict[str, Lease], beats: dict[str, int], me: str, now: int) -> None:
    """One worker's balance, applied to in-memory rows as `PartitionLeases.balance` does."""
    plan = plan_leases(rows, beats, me, now)
    beats[me] = now + TTL_MS
    for p in plan.keep:
        rows[p] = Lease(me, now + TTL_MS, rows[p].epoch)
    for p in plan.release:
        rows[p] = Lease(None, 0, rows[p].epoch)
    for p in plan.claim:
        rows[p] = Lease(me, now + TTL_MS, rows[p].epoch + 1)


@settings(max_examples=200, deadline=None)
@given(
    partitions=st.integers(1, 24),
    workers=st.integers(1, 6),
    order=st.lists(st.integers(0, 5), min_size=0, max_size=30),
)
def test_workers_taking_turns_in_any_order_converge_on_a_fair_disjoint_split(
    partitions: int, workers: int, order: list[int]
) -> None:
    rows = {str(p): Lease(None, 0, 0) for p in range(partitions)}
    beats: dict[str, int] = {}
    names = [f"w-{w}" for w in range(workers)]
    now = 0
    for w in order:  # an arbitrary prefix of turns, then rounds of everyone
        _turn(rows, beats, names[w % workers], now)
        now += TTL_MS // 12
    for _ in range(3):
        for name in names:
            _turn(rows, beats, name, now)
        now += TTL_MS // 3
    held = {n: sorted(p for p, r in rows.items() if r.owner == n) for n in names}
    assert sorted(p for ps in held.values() for p in ps) == sorted(rows)
    assert {n: len(ps) for n, ps in held.items()} == {
        n: fair_share(partitions, names, n) for n in names
    }


def test_a_dead_workers_expired_leases_are_claimed_with_a_new_epoch() -> None:
    rows = {"0": Lease("dead", 1_000, 4), "1": Lease("me", 1_000, 2), "2": Lease("other", 9_000, 1)}
    plan = plan_leases(rows, {"dead": 1_000}, "me", 5_000)
    assert plan.live == ("me", "other")
    assert (plan.share, plan.keep, plan.claim, plan.release) == (2, ("1",), ("0",), ())


def test_a_worker_gives_up_what_lies_beyond_its_share_when_another_appears() -> None:
    rows = {str(p): Lease("a", 9_000, 1) for p in range(4)}
    plan = plan_leases(rows, {"b": 9_000}, "a", 5_000)
    assert (plan.share, plan.keep, plan.claim, plan.release) == (2, ("0", "1"), (), ("2", "3"))
    # b counts from its heartbeat alone; it claims nothing until a frees them
    assert plan_leases(rows, {"b": 9_000}, "b", 5_000).claim == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"ttl": LeaseConfig().ttl / 60}, id="ttl-under-a-second"),
        pytest.param({"ttl": LeaseConfig().ttl * 1000}, id="ttl-over-an-hour"),
        pytest.param({"worker_id": ""}, id="empty-worker-id"),
        pytest.param({"worker_id": "w\n1"}, id="unprintable-worker-id"),
        pytest.param({"worker_id": "w" * 201}, id="long-worker-id"),
    ],
)
def test_bad_lease_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(SourceConfigError):
        LeaseConfig(**kwargs)  # type: ignore[arg-type]
