"""The hub gateway under one fixture: the in-memory adapter, and the `azure-iot-hub` SDK adapter
against a mock hub (`BackgroundHub`) on free ports, with its devices played by paho clients."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from infra.hub import BackgroundHub, HubConfig
from service.hubgateway import HubGateway, MemoryHubGateway, MethodHandler, SdkHubGateway
from tests.integration.hub.conftest import HOSTNAME, Device


class DeviceSide(Protocol):
    """What a device does to its twin and methods, whichever hub it talks to."""

    def report(self, device_id: str, key: str | None, patch: dict[str, Any]) -> None: ...

    def serve_methods(self, device_id: str, key: str | None, handler: MethodHandler) -> None: ...


class MemoryDevices:
    def __init__(self, gateway: MemoryHubGateway) -> None:
        self.gateway = gateway

    def report(self, device_id: str, key: str | None, patch: dict[str, Any]) -> None:
        self.gateway.report(device_id, patch)

    def serve_methods(self, device_id: str, key: str | None, handler: MethodHandler) -> None:
        self.gateway.connect(device_id, handler)


@dataclass
class MqttDevices:
    hub: BackgroundHub
    clients: dict[str, Device] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self, device_id: str, key: str | None) -> Device:
        if device_id not in self.clients:
            assert key is not None
            client = Device(self.hub.server, device_id).tls().sas(key).connect()
            client.subscribe("$iothub/twin/res/#", "$iothub/methods/POST/#")
            self.clients[device_id] = client
        return self.clients[device_id]

    def report(self, device_id: str, key: str | None, patch: dict[str, Any]) -> None:
        client = self._client(device_id, key)
        client.publish("$iothub/twin/PATCH/properties/reported/?$rid=7", json.dumps(patch))
        client.expect("$iothub/twin/res/204")

    def serve_methods(self, device_id: str, key: str | None, handler: MethodHandler) -> None:
        client = self._client(device_id, key)

        def loop() -> None:
            while not self.stop.is_set():
                try:
                    request = client.expect("$iothub/methods/POST/", timeout=0.5)
                except Exception:
                    continue
                name = request.topic.split("/")[3]
                rid = request.topic.split("$rid=")[1]
                try:
                    status, payload = handler(name, json.loads(request.payload or b"null"))
                except TimeoutError:
                    continue  # say nothing: the hub times the call out
                client.publish(f"$iothub/methods/res/{status}/?$rid={rid}", json.dumps(payload))

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        for client in self.clients.values():
            client.close()


@dataclass
class Rig:
    gateway: HubGateway
    devices: DeviceSide
    kind: str


@pytest.fixture(params=["memory", "sdk"])
def rig(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    if request.param == "memory":
        gateway = MemoryHubGateway()
        yield Rig(gateway, MemoryDevices(gateway), "memory")
        return
    config = HubConfig(data_dir=tmp_path / "hub", hostname=HOSTNAME, mqtt_port=0, https_port=0)
    with BackgroundHub(config) as hub:
        # msrest honours REQUESTS_CA_BUNDLE: how the SDK trusts the mock's CA, unmodified.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hub.server.ca_cert))
        info = json.loads((hub.server.config.data_dir / "hub.json").read_text())
        devices = MqttDevices(hub)
        try:
            gateway = SdkHubGateway.from_connection_string(info["service_connection_string"])
            yield Rig(gateway, devices, "sdk")
        finally:
            devices.close()
