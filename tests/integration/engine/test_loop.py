"""`EngineLoop` drives a rollout to completion in its own thread, lives through a failing hub,
and stops cleanly, giving the leader lease up."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from service.domain.rollout_events import Pause, Start
from service.engine import Dispatcher, Engine, EngineLoop, NotLeaderError
from service.hubgateway import DeviceTwin, HubGatewayError, MemoryHubGateway
from service.storage import MemoryStorage
from tests.integration.engine._world import CONFIG, World


class FlakyHub:
    """The hub gateway port whose twin reads fail `failures` times, then recover."""

    def __init__(self, inner: MemoryHubGateway, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    def get_twins(self, device_ids: Sequence[str]) -> dict[str, DeviceTwin]:
        if self.failures > 0 and device_ids:
            self.failures -= 1
            raise HubGatewayError("the hub is unreachable")
        return self._inner.get_twins(device_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_the_loop_completes_a_rollout_through_a_hub_outage() -> None:
    world = World(MemoryStorage(), bad_in_rest=0)
    hub = FlakyHub(world.hub, failures=3)
    done = threading.Event()

    def on_round(rounds: int) -> None:  # runs in the loop's thread, after each round
        world.now += timedelta(minutes=1)
        world.fleet.step()
        if world.rollout_state()[0] == "completed" or rounds > 500:
            done.set()

    engine = Engine(world.storage, hub, CONFIG)  # type: ignore[arg-type]
    dispatcher = Dispatcher(world.storage, hub, world.director, world.notifier, CONFIG)  # type: ignore[arg-type]
    loop = EngineLoop(
        engine,
        dispatcher,
        interval=timedelta(milliseconds=10),
        clock=lambda: world.now,
        on_round=on_round,
    )
    loop.start()
    try:
        assert done.wait(120), "the loop stopped making rounds"
    finally:
        loop.stop()
    assert not loop.running
    assert world.rollout_state()[0] == "completed"
    assert loop.failures == 3 and hub.failures == 0
    loop.stop()  # idempotent
    with world.storage.begin() as uow:  # the lease was given up: another engine leads at once
        lease = uow.leases.acquire(CONFIG.lease_name, "other", world.now, CONFIG.lease_ttl)
    assert lease is not None and lease.holder == "other"


def test_the_loop_refuses_a_silly_interval_and_a_second_start() -> None:
    world = World(MemoryStorage())
    engine = Engine(world.storage, world.hub, CONFIG)
    dispatcher = Dispatcher(world.storage, world.hub, world.director, world.notifier, CONFIG)
    with pytest.raises(ValueError, match="interval"):
        EngineLoop(engine, dispatcher, interval=timedelta(0), clock=lambda: world.now)
    loop = EngineLoop(engine, dispatcher, interval=timedelta(seconds=1), clock=lambda: world.now)
    loop.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            loop.start()
    finally:
        loop.stop()
    assert not loop.running


def test_commands_from_another_engine_object_share_the_leader() -> None:
    """The API calls `Engine.command` from its own threads and Engine object while the loop
    ticks: with the same holder both lead; another holder is refused."""
    world = World(MemoryStorage(), start=False)
    world.step()  # the world's engine holds the lease now
    api = Engine(world.storage, world.hub, CONFIG)
    decision = api.command("ro-1", Start("alice"), world.now)
    assert decision.rollout.state.value == "running"
    assert world.engine.tick(world.now).leader
    other = Engine(world.storage, world.hub, replace(CONFIG, holder="replica-2"))
    with pytest.raises(NotLeaderError):
        other.command("ro-1", Pause("bob"), world.now)
    assert not other.tick(world.now).leader
