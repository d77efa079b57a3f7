"""The agent with two real cores installs signed releases, refuses bad ones, reports.

The hub is the in-memory port (the MQTT path is covered with the mock hub elsewhere); the trust
chain, the streaming verifier, the inter-core protocol, TFLM and the cores are real: each test
runs with core processes and with cores hosted in process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.protocol import parse_reported
from infra.simdevice import SimulatedDevice
from tests.agent_world import MemoryHub, deploy, sign_prebuilt, simulated_device, wait_for
from tests.signing_world import World


@pytest.fixture(params=["process", "inprocess"])
def rig(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(
        tmp_path, world, hub, period_s=0.05, health_interval_s=1.0, core_mode=request.param
    )
    device.start()
    try:
        yield world, hub, device
    finally:
        device.stop()


def _installed(hub: MemoryHub, release: str) -> bool:
    agent = hub.agent()
    return agent.get("installedReleaseId") == release and agent.get("state") == "idle"


def test_two_core_release_installs_and_telemetry_flows(
    rig: tuple[World, MemoryHub, SimulatedDevice],
) -> None:
    world, hub, device = rig
    sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))

    wait_for(lambda: _installed(hub, "r1"), what="r1 installed")
    cores = hub.agent()["cores"]
    assert cores["m4-0"]["activeModel"]["modelId"] == "kws"
    assert cores["m4-1"]["activeModel"]["modelId"] == "vibration"
    assert hub.reported["tinyfleet"]["service"]["ac"] == 200

    def models() -> set[tuple[str, str]]:
        return {(r.core, r.model_id) for b in list(hub.batches) for r in b.inference}

    wait_for(
        lambda: {("m4-0", "kws"), ("m4-1", "vibration")} <= models(),
        what="inference telemetry from both cores",
    )
    assert len(set(hub.message_ids)) == len(hub.message_ids)


def test_a_release_whose_self_test_fails_reverts_both_cores(
    rig: tuple[World, MemoryHub, SimulatedDevice], tmp_path: Path
) -> None:
    world, hub, device = rig
    sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
    wait_for(lambda: _installed(hub, "r1"), what="r1 installed")

    # v2 of kws with its self-test expectations corrupted: signed correctly, fails on the core.
    import json
    import shutil

    from service.trust import ArtifactSpec
    from tests.agent_world import PREBUILT

    bad = tmp_path / "kws-v2.0.0.tflite"
    shutil.copy(PREBUILT / "kws-v2.0.0.tflite", bad)
    sidecar = json.loads((PREBUILT / "kws-v2.0.0.json").read_text())
    for vector in sidecar["selfTest"]:
        vector["expected"] = "AAAAAA=="
        vector["tolerance"] = 0
    bad.with_suffix(".json").write_text(json.dumps(sidecar))
    spec = ArtifactSpec.from_file(bad, "m4-0", ["mt3620"], 1)
    world.image.add_artifact(spec.target_path, bad, spec.custom, world.now)
    sign_prebuilt(world, "r2-vib", {"m4-1": "vibration-v2.0.0"})  # signs vibration v2
    world.image.add_release(
        "r2",
        1,
        ["mt3620"],
        [("m4-0", spec.target_path), ("m4-1", "models/vibration/vibration-v2.0.0.tflite")],
        world.now,
    )
    world.image.commit(world.now)
    world.director.assign("dev-1", "mt3620", "r2", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-2", "dev-1")))

    wait_for(lambda: hub.agent().get("state") == "failed", what="r2 failed")
    agent = hub.agent()
    assert agent["lastResult"]["step"] == "activate"
    assert agent["installedReleaseId"] == "r1"
    assert agent["cores"]["m4-0"]["activeModel"]["version"] == "1.0.0"
    assert agent["cores"]["m4-1"]["activeModel"]["version"] == "1.0.0"  # reverted, not kept


def test_tampered_target_bytes_are_refused_and_nothing_changes(
    rig: tuple[World, MemoryHub, SimulatedDevice],
) -> None:
    world, hub, device = rig
    sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    for name in world.store.list("image/targets/models/vibration/"):
        data = bytearray(b"".join(world.store.get(name)))
        data[100] ^= 0x55
        world.store.replace_bytes(name, bytes(data))
    device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))

    wait_for(lambda: hub.agent().get("state") == "failed", what="refusal")
    agent = hub.agent()
    assert (agent["lastResult"]["reason"], agent["lastResult"]["step"]) == ("target-hash", "stage")
    # Read through the contract's parser: a null in a twin patch deletes the key.
    reported = parse_reported(agent)
    assert reported.installed_release is None
    assert reported.cores["m4-0"].model_id is None  # nothing activated anywhere
