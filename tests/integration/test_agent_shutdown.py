"""The host's shutdown ends every core cleanly: the links stay serviced while the agent is
stopped, then each link is closed (EOF) and each core exits 0 without a retransmission warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent_world import MemoryHub, deploy, sign_prebuilt, simulated_device, wait_for
from tests.signing_world import World


def test_stopping_the_device_closes_the_links_and_the_cores_exit_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(tmp_path, world, hub, period_s=0.02)
    device.start()
    try:
        sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
        world.director.assign("dev-1", "mt3620", "r1", world.now)
        device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
        wait_for(lambda: hub.agent().get("installedReleaseId") == "r1", what="r1 installed")

        # The agent's loop stops first; the cores keep sending results meanwhile, and must be
        # acknowledged for longer than their patience (12 retransmissions, 3 s).
        device.agent.stop_event.set()
        assert device._thread is not None
        device._thread.join(timeout=15)
        clients = dict(device.agent.cores)
        base = {core: c.link_stats["frames_received"] for core, c in clients.items()}
        wait_for(
            lambda: all(
                c.link_stats["frames_received"] >= base[k] + 250 for k, c in clients.items()
            ),
            what="the cores still heard while the agent loop is stopped",
        )
        assert all(p.alive for p in device.processes.values())
    finally:
        device.stop()
    codes = {core: p.process.returncode for core, p in device.processes.items()}
    assert codes == {"m4-0": 0, "m4-1": 0}
    assert "unacknowledged after" not in capfd.readouterr().err
