"""Devices whose cores are hosted in process, against the real mock hub over TLS: each agent
speaks MQTT to the hub on its own connection, downloads a signed release over HTTP, streams it
into its cores on the shared reactor, activates and confirms it, and its telemetry reaches the
hub's feed. The hub, the trust chain, the cores and TFLM are all real; no core process runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.hub_client import HubOptions
from device_agent.hub_dialect import ConnectionString
from device_agent.protocol import decode_batch
from firmware.host import CoreReactor
from infra.hub import provision_device
from infra.simdevice import CoreSpec, SimulatedDevice
from tests.agent_world import wait_for
from tests.integration.test_fleet import World, world  # noqa: F401  (the fixture)

DEVICES = ("light-1", "light-2", "light-3")


@pytest.fixture
def devices(world: World) -> Iterator[tuple[CoreReactor, dict[str, SimulatedDevice]]]:  # noqa: F811
    server = world.hub.server
    assert server.ca_cert is not None
    reactor = CoreReactor()
    started: dict[str, SimulatedDevice] = {}
    try:
        for index, device_id in enumerate(DEVICES):
            provisioned = provision_device(server.config, device_id)
            device = SimulatedDevice(
                device_id=device_id,
                hardware_id="mt3620",
                profile="mt3620",
                state_dir=world.tmp / device_id,
                image_root=world.trust.image().root_bytes(),
                director_root=world.trust.director().root_bytes(),
                connection=ConnectionString.parse(provisioned.connection_string),
                hub_options=HubOptions(
                    ca_file=Path(server.ca_cert), port=server.mqtt_port, backoff_max_s=2.0
                ),
                cores={
                    "m4-0": CoreSpec(inference_period_s=0.2, seed=2 * index),
                    "m4-1": CoreSpec(inference_period_s=0.2, seed=2 * index + 1),
                },
                health_interval_s=1.0,
                core_mode="inprocess",
                reactor=reactor,
            )
            device.start()
            started[device_id] = device
        yield reactor, started
    finally:
        for device in started.values():
            device.stop()
        reactor.close()


def _telemetry(rig: World, device_id: str) -> list[tuple[str | None, str, str]]:
    """(release, core, model id) of every inference row the hub's feed holds for the device."""

    def read() -> list[tuple[str | None, str, str]]:
        feed = rig.hub.core.feed
        rows = []
        for partition in feed.partition_ids:
            for event in feed.read(partition, max_count=10_000):
                if event.device_id == device_id:
                    batch = decode_batch(event.body, device_id=device_id)
                    rows += [(batch.release, r.core, r.model_id) for r in batch.inference]
        return rows

    return list(rig.hub.call(read))


def test_inprocess_devices_install_a_signed_release_over_the_hub_and_send_telemetry(
    world: World,  # noqa: F811
    devices: tuple[CoreReactor, dict[str, SimulatedDevice]],
) -> None:
    reactor, fleet = devices
    for device_id in fleet:
        wait_for(lambda d=device_id: world.online(d), 60, f"{device_id} online")
    assert reactor.cores == 2 * len(fleet)
    for device_id in fleet:
        world.deploy(device_id, "r1", f"wf-r1-{device_id}")
    for device_id in fleet:
        wait_for(lambda d=device_id: world.installed(d) == "r1", 120, f"r1 on {device_id}")
        cores = world.agent(device_id)["cores"]
        assert {c: r["activeModel"]["version"] for c, r in cores.items()} == {
            "m4-0": "1.0.0",
            "m4-1": "1.0.0",
        }
    for device_id in fleet:
        wait_for(
            lambda d=device_id: (
                {("r1", "m4-0", "kws"), ("r1", "m4-1", "vibration")} <= set(_telemetry(world, d))
            ),
            60,
            f"inference telemetry of r1 from both cores of {device_id}",
        )
    # Every core runs the same two models: two interpreters serve all six cores.
    assert len(reactor.interpreters) == 2

    # A power cut of one hosted core: the agent boots it again from its slots, on r1.
    device = fleet["light-1"]
    before = device.core_boot_ids()["m4-1"]
    assert device.kill_core("m4-1") == -9
    wait_for(lambda: device.core_boot_ids()["m4-1"] != before, 60, "m4-1 booted again")

    def back() -> bool:
        core = world.agent("light-1")["cores"]["m4-1"]
        return core["state"] == "running" and core["activeModel"]["version"] == "1.0.0"

    wait_for(back, 60, "m4-1 runs v1 again")
    assert device.revived_cores == 1
