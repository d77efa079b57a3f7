"""Two `ReliableLink` ends wired through fault-injecting channels on a virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from device_agent.intercore._faults import FaultPlan, FaultyChannel
from firmware.icc import MT3620, Message, ReliableLink


@dataclass
class LinkPair:
    """A host link and a core link joined by one faulty channel per direction."""

    plan_to_core: FaultPlan = field(default_factory=FaultPlan)
    plan_to_host: FaultPlan = field(default_factory=FaultPlan)
    max_message_bytes: int = MT3620.max_message_bytes
    window: int = MT3620.window
    now: float = 0.0

    def __post_init__(self) -> None:
        def make() -> ReliableLink:
            return ReliableLink(
                max_message_bytes=self.max_message_bytes,
                window=self.window,
                retransmit_timeout_s=0.05,
                max_retransmits=60,
            )

        self.host, self.core = make(), make()
        self.to_core = FaultyChannel(self.plan_to_core)
        self.to_host = FaultyChannel(self.plan_to_host)
        self.at_core: list[Message] = []
        self.at_host: list[Message] = []

    def step(self, dt: float = 0.01) -> None:
        """Advance the clock by `dt`, deliver what is due, and flush both ends."""
        self.now += dt
        for data in self.to_core.take(self.now):
            self.at_core.extend(self.core.receive(data))
        for data in self.to_host.take(self.now):
            self.at_host.extend(self.host.receive(data))
        for frame in self.host.outbound(self.now):
            self.to_core.put(frame, self.now)
        for frame in self.core.outbound(self.now):
            self.to_host.put(frame, self.now)

    def run_until(self, done: object, max_steps: int = 20000) -> int:
        assert callable(done)
        for steps in range(max_steps):
            if done():
                return steps
            self.step()
        raise AssertionError("link pair did not converge")


@pytest.fixture
def link_pair() -> type[LinkPair]:
    return LinkPair
