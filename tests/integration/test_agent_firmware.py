"""Firmware targets: applied by restarting the core into the new image on a profile that allows
it (linux-a7-m4), undone when the release fails, and refused before transfer on mt3620."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.simdevice import FIRMWARE_DIR, CoreSpec, SimulatedDevice
from service.trust import ArtifactSpec
from tests.agent_world import PREBUILT, MemoryHub, deploy, wait_for
from tests.signing_world import World, firmware_custom


def _sign_firmware(world: World, image: Path, hardware: str) -> str:
    version = json.loads(image.read_text())["version"]
    path = f"firmware/m4/{image.name}"
    world.image.add_artifact(path, image, firmware_custom(version, hardware=[hardware]), world.now)
    return path


def _sign_model(
    world: World, source: Path, hardware: str, sidecar: dict[str, object] | None = None
) -> str:
    spec = ArtifactSpec.from_file(source, "m4-0", [hardware], 1)
    if sidecar is not None:
        spec.custom.update(sidecar)
    world.image.add_artifact(spec.target_path, spec.source, spec.custom, world.now)
    return spec.target_path


def _device(
    tmp: Path, world: World, hub: MemoryHub, profile: str, hardware: str
) -> SimulatedDevice:
    cores = {"m4-0": CoreSpec(inference_period_s=0.1)}
    if profile == "mt3620":
        cores["m4-1"] = CoreSpec(inference_period_s=0.1)
    return SimulatedDevice(
        device_id="dev-1",
        hardware_id=hardware,
        profile=profile,
        state_dir=tmp / "dev",
        image_root=world.image_root,
        director_root=world.director_root,
        hub=hub,
        store=world.store,
        cores=cores,
    )


@pytest.fixture
def stm32(tmp_path: Path) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = _device(tmp_path, world, hub, "linux-a7-m4", "stm32mp1")
    device.start()
    try:
        yield world, hub, device
    finally:
        device.stop()


def test_firmware_and_model_install_together_and_a_failed_release_restores_both(
    stm32: tuple[World, MemoryHub, SimulatedDevice], tmp_path: Path
) -> None:
    world, hub, device = stm32
    fw_old = _sign_firmware(world, FIRMWARE_DIR / "m4-1.0.0.json", "stm32mp1")
    fw_new = _sign_firmware(world, FIRMWARE_DIR / "m4-1.1.0.json", "stm32mp1")
    model_v1 = _sign_model(world, PREBUILT / "vibration-v1.0.0.tflite", "stm32mp1")
    world.release("r1", [("m4-0", fw_old), ("m4-0", model_v1)], hardware=["stm32mp1"])
    world.director.assign("dev-1", "stm32mp1", "r1", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
    wait_for(lambda: hub.agent().get("installedReleaseId") == "r1", what="r1")

    model_v2 = _sign_model(world, PREBUILT / "vibration-v2.0.0.tflite", "stm32mp1")
    world.release("r2", [("m4-0", fw_new), ("m4-0", model_v2)], hardware=["stm32mp1"])
    world.director.assign("dev-1", "stm32mp1", "r2", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-2", "dev-1")))
    wait_for(lambda: hub.agent().get("installedReleaseId") == "r2", what="r2")
    core = hub.agent()["cores"]["m4-0"]
    assert (core["firmwareVersion"], core["activeModel"]["version"]) == ("1.1.0", "2.0.0")
    new_info = world.image.target(fw_new)
    assert new_info is not None
    assert device.firmware_path("m4-0").stem == new_info.hashes["sha256"]

    # r3: firmware back to 1.0.0 with a model whose self-test cannot pass: everything reverts.
    bad = json.loads((PREBUILT / "vibration-v3.0.0.json").read_text())
    for vector in bad["selfTest"]:  # expectations no output can meet
        wrong = bytes(b ^ 0x80 for b in base64.b64decode(vector["expected"]))
        vector["expected"], vector["tolerance"] = base64.b64encode(wrong).decode(), 0
    broken = tmp_path / "vibration-v3.0.0.tflite"
    broken.write_bytes((PREBUILT / "vibration-v3.0.0.tflite").read_bytes())
    broken.with_suffix(".json").write_text(json.dumps(bad))
    model_bad = _sign_model(world, broken, "stm32mp1")
    world.release("r3", [("m4-0", fw_old), ("m4-0", model_bad)], hardware=["stm32mp1"])
    world.director.assign("dev-1", "stm32mp1", "r3", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-3", "dev-1")))
    wait_for(lambda: hub.agent().get("state") == "failed", what="r3 refused")
    core = hub.agent()["cores"]["m4-0"]
    assert hub.agent()["installedReleaseId"] == "r2"
    assert (core["firmwareVersion"], core["activeModel"]["version"]) == ("1.1.0", "2.0.0")


def test_firmware_is_refused_before_any_transfer_on_mt3620(tmp_path: Path) -> None:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = _device(tmp_path, world, hub, "mt3620", "mt3620")
    device.start()
    try:
        firmware = _sign_firmware(world, FIRMWARE_DIR / "m4-1.1.0.json", "mt3620")
        model = _sign_model(world, PREBUILT / "kws-v1.0.0.tflite", "mt3620")
        world.release("r1", [("m4-0", firmware), ("m4-0", model)])
        world.director.assign("dev-1", "mt3620", "r1", world.now)
        device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
        wait_for(lambda: hub.agent().get("state") == "failed", what="refusal")
        result = hub.agent()["lastResult"]
        assert (result["reason"], result["step"]) == ("kind-not-allowed", "check")
        assert hub.agent()["cores"]["m4-0"]["firmwareVersion"] == "1.0.0"
        assert not (tmp_path / "dev" / "agent" / "firmware").exists()
    finally:
        device.stop()
