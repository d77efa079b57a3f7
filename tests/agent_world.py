"""An in-memory hub port for driving a real agent (with real core processes) without MQTT."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from device_agent.protocol import decode_batch
from device_agent.protocol.summary import SUMMARY_SCHEMA, SummaryBatch, decode_summaries
from device_agent.protocol.telemetry import TelemetryBatch
from infra.simdevice import CoreMode, CoreSpec, SimulatedDevice
from service.trust import ArtifactSpec
from tests.signing_world import World

PREBUILT = Path(__file__).resolve().parents[1] / "firmware" / "models" / "prebuilt"


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class MemoryHub:
    """The hub port, in memory: a twin with desired and reported sections, and received batches."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.connected = threading.Event()
        self.connected.set()
        self.desired: dict[str, Any] = {"$version": 1}
        self.reported: dict[str, Any] = {}
        self.batches: list[TelemetryBatch] = []
        self.summaries: list[SummaryBatch] = []
        self.bodies: list[tuple[bytes, str]] = []  # every message as sent, with its message id
        self.message_ids: list[str] = []
        self.fail_sends = False
        self._lock = threading.Lock()

    def get_twin(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps({"desired": self.desired, "reported": self.reported}))

    def patch_reported(self, body: bytes) -> int | None:
        with self._lock:
            _merge(self.reported, json.loads(body))
            return None

    def send_telemetry(self, body: bytes, properties: dict[str, str]) -> None:
        if self.fail_sends:
            raise ConnectionError("link down")
        with self._lock:
            if properties.get("tf-schema") == SUMMARY_SCHEMA:
                self.summaries.append(decode_summaries(body, device_id=self.device_id))
            else:
                self.batches.append(decode_batch(body, device_id=self.device_id))
            self.message_ids.append(properties["$.mid"])
            self.bodies.append((body, properties["$.mid"]))

    def set_desired(self, service: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.desired = {
                "$version": self.desired["$version"] + 1,
                "tinyfleet": {"__t": "c", "service": service},
            }
            return dict(self.desired)

    def agent(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self.reported.get("tinyfleet", {}).get("agent", {})))


def deploy(workflow_id: str, device_id: str) -> dict[str, Any]:
    return {
        "workflow": {"action": 3, "id": workflow_id},
        "repository": {
            "imageUrl": "store:///image/metadata/",
            "directorUrl": f"store:///director/devices/{device_id}/metadata/",
            "targetsUrl": "store:///image/targets/",
        },
    }


def sign_prebuilt(world: World, release_id: str, files: dict[str, str], counter: int = 1) -> None:
    """Sign prebuilt models (core -> file stem, e.g. {"m4-0": "kws-v1.0.0"}) as one release."""
    members = []
    for core, stem in files.items():
        spec = ArtifactSpec.from_file(PREBUILT / f"{stem}.tflite", core, ["mt3620"], counter)
        world.image.add_artifact(spec.target_path, spec.source, spec.custom, world.now)
        members.append((core, spec.target_path))
    world.release(release_id, members, counter=counter)


def simulated_device(
    tmp: Path,
    world: World,
    hub: MemoryHub,
    *,
    device_id: str = "dev-1",
    period_s: float = 0.05,
    health_interval_s: float = 30.0,
    restart_cores: bool = True,
    core_mode: CoreMode = "process",
) -> SimulatedDevice:
    """An MT3620 device (agent and two real cores, processes unless `core_mode` says
    "inprocess") reading `world`'s store."""
    return SimulatedDevice(
        device_id=device_id,
        hardware_id="mt3620",
        profile="mt3620",
        state_dir=tmp / "dev",
        image_root=world.image_root,
        director_root=world.director_root,
        hub=hub,
        store=world.store,
        health_interval_s=health_interval_s,
        restart_cores=restart_cores,
        core_mode=core_mode,
        cores={
            "m4-0": CoreSpec(inference_period_s=period_s, seed=1),
            "m4-1": CoreSpec(inference_period_s=period_s, seed=2),
        },
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


V1 = {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"}


@contextmanager
def running_device(tmp: Path, **options: Any) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    """A repository world, a hub and a started device (`simulated_device` options), stopped
    on exit."""
    world = World(tmp / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(tmp, world, hub, **options)
    device.start()
    try:
        yield world, hub, device
    finally:
        device.stop()


def offer_v1(world: World, hub: MemoryHub, device: SimulatedDevice, workflow: str) -> None:
    """Sign release r1 (v1 models on both cores), assign it and offer it as `workflow`."""
    sign_prebuilt(world, "r1", V1)
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device.agent.on_desired(hub.set_desired(deploy(workflow, "dev-1")))
