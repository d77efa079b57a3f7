"""Direct methods on a real agent with real cores, and telemetry kept while the link is down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.simdevice import SimulatedDevice
from tests.agent_world import MemoryHub, deploy, sign_prebuilt, simulated_device, wait_for
from tests.signing_world import World


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(tmp_path, world, hub, period_s=0.05, health_interval_s=0.5)
    device.start()
    sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
    sign_prebuilt(world, "r2", {"m4-0": "kws-v2.0.0", "m4-1": "vibration-v2.0.0"})
    for release, workflow in (("r1", "wf-1"), ("r2", "wf-2")):
        world.director.assign("dev-1", "mt3620", release, world.now)
        device.agent.on_desired(hub.set_desired(deploy(workflow, "dev-1")))
        wait_for(lambda r=release: hub.agent().get("installedReleaseId") == r, what=release)
    try:
        yield world, hub, device
    finally:
        device.stop()


def _call(device: SimulatedDevice, name: str, payload: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, body = device.agent.on_method(name, json.dumps(payload).encode() if payload else b"")
    return status, json.loads(body)


def test_get_status_and_collect_diagnostics(
    installed: tuple[World, MemoryHub, SimulatedDevice],
) -> None:
    _world, _hub, device = installed
    status, body = _call(device, "get-status")
    assert status == 200 and body["installedReleaseId"] == "r2"
    assert body["cores"]["m4-0"]["activeModel"]["version"] == "2.0.0"
    status, body = _call(device, "collect-diagnostics")
    assert status == 200 and set(body["links"]) == {"m4-0", "m4-1"}
    assert body["telemetry"]["nextSeq"] >= 1


def test_rollback_reboot_and_bad_calls(installed: tuple[World, MemoryHub, SimulatedDevice]) -> None:
    _world, hub, device = installed
    old_pid = device.processes["m4-1"].pid
    assert _call(device, "reboot-core", {"core": "m4-1"})[0] == 200
    assert device.processes["m4-1"].pid != old_pid
    wait_for(
        lambda: hub.agent()["cores"]["m4-1"]["activeModel"]["version"] == "2.0.0",
        what="m4-1 back on its confirmed model after a reboot",
    )

    status, body = _call(device, "rollback", {"core": "m4-0"})
    assert status == 200, body
    wait_for(
        lambda: hub.agent()["cores"]["m4-0"]["activeModel"]["version"] == "1.0.0",
        what="operator rollback of m4-0",
    )

    wait_for(lambda: hub.agent().get("installedReleaseId") is None, what="release forgotten")
    # the director still says r2: the next deployment puts it back
    device.agent.on_desired(hub.set_desired(deploy("wf-3", "dev-1")))
    wait_for(lambda: hub.agent().get("installedReleaseId") == "r2", what="r2 again")
    assert hub.agent()["cores"]["m4-0"]["activeModel"]["version"] == "2.0.0"

    assert _call(device, "rollback", {"core": "m9"})[0] == 400
    assert _call(device, "format-disk")[0] == 404
    assert device.agent.on_method("get-status", b"{not json")[0] == 400


def test_telemetry_waits_out_a_link_outage_and_is_delivered_once(
    installed: tuple[World, MemoryHub, SimulatedDevice],
) -> None:
    _world, hub, device = installed
    hub.connected.clear()
    outage_from = int(time.time() * 1000)
    before = len(hub.batches)
    wait_for(lambda: len(device.agent.telemetry) > 20, what="records buffered offline")
    assert len(hub.batches) == before
    buffered = len(device.agent.telemetry)
    outage_to = int(time.time() * 1000)
    hub.connected.set()

    def delivered_from_outage() -> int:
        return sum(
            1 for b in list(hub.batches) for r in b.inference if outage_from <= r.ts_ms <= outage_to
        )

    # most of what was buffered is inference from the outage (a few are health or older rows)
    wait_for(lambda: delivered_from_outage() >= buffered // 2, what="outage records delivered")
    assert device.agent.telemetry.dropped_total == 0
    assert len(set(hub.message_ids)) == len(hub.message_ids)
    assert any(batch.health for batch in hub.batches)
