"""A real agent over two real core machines in threads, in memory: the cores run the real ICC
protocol and TFLM behind memory transports, the host boots and restarts them, the hub is the
in-memory `MemoryHub`, and the agent's clock is a settable one. `make_rig` builds them and
closes them after the test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from device_agent.agent import Agent, AgentConfig
from device_agent.intercore import CoreClient, memory_pipe
from device_agent.protocol import EventRecord, InferenceRecord
from firmware._core import CoreConfig, CoreMachine
from firmware._image import FirmwareImage
from firmware._slots import SlotStore
from firmware.icc import MT3620
from tests.agent_world import MemoryHub
from tests.unit.firmware.conftest import IMAGES, ThreadCore, chunks, prebuilt, target_for

__all__ = [
    "Clock",
    "MemoryHost",
    "Rig",
    "events",
    "hub_of",
    "install",
    "make_rig",
    "rows",
    "step_until",
]


class MemoryHost:
    """Boots cores as threads; `healthy` says whether a booted core comes up or dies at once."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.cores: dict[str, ThreadCore] = {}
        self.restarts: list[str] = []
        self.healthy = True
        self.exit_statuses: dict[str, int] = {}  # how each core's last process ended

    def boot(self, core: str) -> CoreClient:
        host_end, core_end = memory_pipe()
        config = CoreConfig(core, MT3620, FirmwareImage.load(IMAGES / "m4-1.0.0.json"), 0.05, 0.2)
        machine = CoreMachine(config, SlotStore(self.state / core), time.monotonic())
        thread_core = ThreadCore(machine, core_end)
        if self.healthy:
            thread_core.start()
        else:
            core_end.close()  # the core dies as it boots: the host end sees EOF
        self.cores[core] = thread_core
        return CoreClient(host_end, MT3620)

    def restart_core(self, core: str, firmware: Path | None = None) -> CoreClient:
        self.restarts.append(core)
        self.cores[core].close()
        return self.boot(core)

    def firmware_path(self, core: str) -> Path:
        return IMAGES / "m4-1.0.0.json"

    def exit_status(self, core: str) -> int | None:
        return self.exit_statuses.get(core)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _agent(
    tmp_path: Path, host: MemoryHost, clock: Clock, *, restart_cores: bool = True, **options: Any
) -> Agent:
    config = AgentConfig(
        device_id="dev-1",
        hardware_id="mt3620",
        profile="mt3620",
        allowed_kinds=frozenset({"model"}),
        state_dir=tmp_path / "agent",
        image_root=b"{}",
        director_root=b"{}",
        restart_cores=restart_cores,
        **options,
    )
    cores = {core: host.boot(core) for core in ("m4-0", "m4-1")}
    for client in cores.values():
        client.connect()

    def unused(_: Any) -> Any:
        raise AssertionError("no update in this test")

    return Agent(
        config, MemoryHub("dev-1"), cores, fetcher_for=unused, source_for=unused, host=host,
        clock=clock,
    )  # fmt: skip


Rig = Callable[..., tuple[Agent, MemoryHost, Clock]]


@contextmanager
def make_rig(tmp_path: Path) -> Iterator[Rig]:
    """`make(restart_cores=..., **AgentConfig options)` -> (agent, host, clock); every agent
    and core made is closed at the end."""
    made: list[tuple[Agent, MemoryHost]] = []

    def make(*, restart_cores: bool = True, **options: Any) -> tuple[Agent, MemoryHost, Clock]:
        host, clock = MemoryHost(tmp_path / "cores"), Clock()
        agent = _agent(tmp_path, host, clock, restart_cores=restart_cores, **options)
        made.append((agent, host))
        return agent, host, clock

    try:
        yield make
    finally:
        for agent, host in made:
            agent.close_cores()
            for core in host.cores.values():
                core.close()


def hub_of(agent: Agent) -> MemoryHub:
    assert isinstance(agent.hub, MemoryHub)
    return agent.hub


def events(agent: Agent) -> list[EventRecord]:
    return [e for batch in hub_of(agent).batches for e in batch.events]


def rows(agent: Agent) -> list[InferenceRecord]:
    return [r for batch in hub_of(agent).batches for r in batch.inference]


def install(client: CoreClient, stem: str, *, confirm: bool = True) -> None:
    """Stage, activate and (by default) confirm a prebuilt model on one core."""
    blob, meta = prebuilt(stem)
    slot = client.stage(target_for(blob, meta), chunks(blob, 4096))
    client.activate(slot, confirm_timeout_s=60)
    if confirm:
        client.confirm(slot)


def step_until(agent: Agent, done: Callable[[], Any], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        agent.step(0.02)
