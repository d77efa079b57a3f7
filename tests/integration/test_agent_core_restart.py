"""A core that dies (SIGKILL of its process, or dropped by its in-process host: a power cut) is
restarted by the agent itself, reconnects, heartbeats and runs its model again; the restart is
reported as an event."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.simdevice import CoreMode
from tests.agent_world import MemoryHub, deploy, sign_prebuilt, simulated_device, wait_for
from tests.signing_world import World


@pytest.mark.parametrize("mode", ["process", "inprocess"])
def test_a_killed_core_is_restarted_by_the_agent_and_heartbeats_again(
    tmp_path: Path, mode: CoreMode
) -> None:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(tmp_path, world, hub, period_s=0.05, core_mode=mode)
    device.start()
    try:
        sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
        world.director.assign("dev-1", "mt3620", "r1", world.now)
        device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
        wait_for(lambda: hub.agent().get("installedReleaseId") == "r1", what="r1 installed")

        before = device.core_boot_ids()["m4-1"]
        assert device.kill_core("m4-1") == -9
        wait_for(
            lambda: device.core_boot_ids()["m4-1"] != before and device.processes["m4-1"].alive,
            what="the agent restarted m4-1",
        )
        assert device.revived_cores == 1
        wait_for(
            lambda: any(line.startswith("m4-1: restarted after") for line in device.agent.logs),
            what="the restart logged",
        )
        mark = len(device.agent.logs)
        wait_for(
            lambda: any(
                "CoreHeartbeat(core_id='m4-1'" in line for line in list(device.agent.logs)[mark:]
            ),
            what="a heartbeat from the restarted core",
        )
        wait_for(
            lambda: any(
                (e.kind, e.core) == ("crash", "m4-1") for b in list(hub.batches) for e in b.events
            ),
            what="the restart reported as an event",
        )

        def runs_v1() -> bool:
            core = hub.agent()["cores"]["m4-1"]
            return core["state"] == "running" and core["activeModel"]["version"] == "1.0.0"

        wait_for(runs_v1, what="m4-1 runs its model again")
        assert device.processes["m4-0"].alive
    finally:
        device.stop()
