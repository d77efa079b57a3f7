"""Both ends of the reliable link wired together in memory, then faults injected."""

from __future__ import annotations

import pytest

from device_agent.intercore._faults import FaultPlan
from firmware.icc import (
    PROFILES,
    Data,
    Log,
    LogLevel,
    MessageTooLargeError,
    PeerUnresponsiveError,
    ReliableLink,
    Status,
)
from tests.unit.icc.conftest import LinkPair

FAULTS = {
    "clean": FaultPlan(),
    "drop": FaultPlan(drop=0.2, seed=1),
    "duplicate": FaultPlan(duplicate=0.3, seed=2),
    "reorder": FaultPlan(reorder=0.3, reorder_s=0.08, seed=3),
    "split": FaultPlan(split=0.3, seed=4),
    "corrupt": FaultPlan(corrupt=0.2, seed=5),
    "delay": FaultPlan(delay_s=0.03, seed=6),
    "everything": FaultPlan(
        drop=0.1, duplicate=0.1, reorder=0.1, split=0.1, corrupt=0.1, delay_s=0.01, seed=7
    ),
}


def _payloads(count: int) -> list[Data]:
    return [
        Data(offset=i * 900, data=bytes([i % 256]) * (1 + (i * 37) % 900)) for i in range(count)
    ]


@pytest.mark.parametrize("plan", FAULTS.values(), ids=FAULTS.keys())
def test_every_message_arrives_once_and_in_order_in_both_directions(plan: FaultPlan) -> None:
    pair = LinkPair(plan_to_core=plan, plan_to_host=plan)
    down, up = _payloads(120), [Log(LogLevel.INFO, f"line {i}") for i in range(60)]
    pending_down, pending_up = list(down), list(up)

    def done() -> bool:
        while pending_down and pair.host.can_send():
            pair.host.send(pending_down.pop(0))
        while pending_up and pair.core.can_send():
            pair.core.send(pending_up.pop(0))
        return len(pair.at_core) == len(down) and len(pair.at_host) == len(up)

    pair.run_until(done)
    assert pair.at_core == down
    assert pair.at_host == up
    if plan.clean:
        assert pair.host.stats.retransmissions == 0


def test_the_window_bounds_frames_in_flight() -> None:
    link = ReliableLink(max_message_bytes=1024, window=4, retransmit_timeout_s=1, max_retransmits=3)
    for i in range(10):
        link.send(Status())
        assert link.can_send() is (i + 1 < 4)
    sent = [f for f in link.outbound(0.0)]
    assert len(sent) == 4
    assert link.outbound(0.1) == []  # nothing acknowledged, nothing new may go


def test_an_unresponsive_peer_is_reported_after_the_retransmission_limit() -> None:
    link = ReliableLink(max_message_bytes=1024, window=4, retransmit_timeout_s=1, max_retransmits=3)
    link.send(Status())
    assert len(link.outbound(0.0)) == 1
    for round_ in range(1, 4):
        assert len(link.outbound(float(round_))) == 1
    with pytest.raises(PeerUnresponsiveError, match="after 3 retransmissions"):
        link.outbound(4.0)


def test_retransmissions_back_off_so_a_peer_starved_for_seconds_is_waited_for() -> None:
    """0.25 s doubling to 2 s: resent at 0.25, 0.75, 1.75, 3.75, 5.75... (a fixed 0.25 s gave up
    after 3 s, which an application core under CPU contention exceeds: the demo beside a CPU
    hog lost its cores' links that way)."""
    link = ReliableLink(
        max_message_bytes=1024,
        window=4,
        retransmit_timeout_s=0.25,
        max_retransmits=12,
        max_retransmit_timeout_s=2.0,
    )
    link.send(Status())
    assert len(link.outbound(0.0)) == 1
    resent, now = [], 0.0
    while now < 10.0:
        now = round(now + 0.05, 2)
        if link.outbound(now):
            resent.append(now)
    assert resent == [0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75]
    peer = ReliableLink(
        max_message_bytes=1024, window=4, retransmit_timeout_s=0.25, max_retransmits=12
    )
    for frame in link.outbound(11.75):  # the peer wakes up after 10 s and answers
        peer.receive(frame)
    for frame in peer.outbound(11.8):
        link.receive(frame)
    assert link.unacknowledged == 0 and link.next_deadline() is None
    with pytest.raises(PeerUnresponsiveError):  # a peer that never answers is still given up on
        silent = ReliableLink.for_profile(PROFILES["mt3620"])
        silent.send(Status())
        now = 0.0
        while now < 60.0:
            now += 0.25
            silent.outbound(now)


def test_sequence_numbers_wrap_around() -> None:
    pair = LinkPair()
    count = 70000 // 64
    messages = [Status() for _ in range(count)]
    # Start both ends just before the wrap so the test stays short.
    pair.host._next_seq = pair.core._expected = 0xFFFF - 10
    for message in messages:
        pair.host.send(message)
    pair.run_until(lambda: len(pair.at_core) == count)
    assert pair.host._next_seq == (0xFFFF - 10 + count) % 0x10000


def test_a_message_too_large_for_the_profile_fails_at_send() -> None:
    link = ReliableLink(max_message_bytes=496, window=4, retransmit_timeout_s=1, max_retransmits=3)
    with pytest.raises(MessageTooLargeError):
        link.send(Data(offset=0, data=bytes(480)))
    link.send(Data(offset=0, data=bytes(478)))
