"""The agent loses power before each step of a two-core swap; after a restart every core runs a
working model, both cores agree on the release, and the reported state matches the cores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.agent import Agent
from device_agent.intercore import CoreClient
from device_agent.workflow import Command
from infra.simdevice import SimulatedDevice
from tests.agent_world import MemoryHub, deploy, sign_prebuilt, simulated_device, wait_for
from tests.signing_world import World


class PowerCut(BaseException):
    """Raised inside the agent thread: it dies where it stands, like an A7 losing power."""


def _fresh_agent(device: SimulatedDevice, before_command: object = None) -> Agent:
    old = device.agent
    for client in old.cores.values():
        client.detach()  # the old agent is gone: its clients no longer read the sockets
    clients = {
        core: CoreClient(device.processes[core].transport, device.profile)
        for core in device.processes
    }
    for client in clients.values():
        client.connect()  # the agent's restart reconnects to the running cores (HELLO/CAPS)
    kwargs = {"before_command": before_command} if before_command else {}
    device.agent = Agent(
        old.config,
        old.hub,
        clients,
        fetcher_for=old._fetcher_for,
        source_for=old._source_for,
        **kwargs,
    )  # type: ignore[arg-type]
    return device.agent


@pytest.fixture(params=["process", "inprocess"])
def installed_r1(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(tmp_path, world, hub, period_s=0.2, core_mode=request.param)
    device.start()
    sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
    sign_prebuilt(world, "r2", {"m4-0": "kws-v2.0.0", "m4-1": "vibration-v2.0.0"})
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
    wait_for(lambda: hub.agent().get("installedReleaseId") == "r1", what="r1")
    device.agent.stop_event.set()
    assert device._thread is not None
    device._thread.join(timeout=10)
    try:
        yield world, hub, device
    finally:
        device.stop()


# check, stage m4-0, stage m4-1, activate m4-0, activate m4-1, confirm m4-0, confirm m4-1, record
@pytest.mark.parametrize("crash_at", range(1, 12), ids=lambda n: f"before-command-{n}")
def test_power_cut_at_every_step_of_a_swap(
    installed_r1: tuple[World, MemoryHub, SimulatedDevice], crash_at: int
) -> None:
    world, hub, device = installed_r1
    seen: list[str] = []

    def cut(command: Command) -> None:
        seen.append(command.kind)
        if len(seen) == crash_at:
            raise PowerCut(command.kind)

    agent = _fresh_agent(device, cut)
    world.director.assign("dev-1", "mt3620", "r2", world.now)
    agent.on_desired(hub.set_desired(deploy("wf-2", "dev-1")))
    crashed = False
    try:
        for _ in range(200):
            agent.step(0.01)
            if agent.workflow.run is None and len(seen) > 1:
                break
    except PowerCut:
        crashed = True

    revived = _fresh_agent(device)
    revived.on_connected()
    wait_for(lambda: (revived.step(0.01), revived.workflow.run is None)[1], what="settled")
    for _ in range(3):
        revived.step(0.01)

    statuses = {core: client.status() for core, client in revived.cores.items()}
    versions = {
        core: status.running.version
        for core, status in statuses.items()
        if status.running is not None
    }
    assert set(versions) == {"m4-0", "m4-1"}, f"a core runs nothing: {statuses}"
    assert len(set(versions.values())) == 1, f"cores disagree: {versions}"
    installed = revived.installed().release_id
    assert installed == {"1.0.0": "r1", "2.0.0": "r2"}[versions["m4-0"]]
    reported = hub.agent()
    assert reported["installedReleaseId"] == installed
    assert {c: r["activeModel"]["version"] for c, r in reported["cores"].items()} == versions
    if not crashed:
        assert installed == "r2", (seen, reported)
    assert seen[: min(crash_at, 4)] == ["report", "check", "stage", "stage"][: min(crash_at, 4)]
