"""Fixtures for the mock hub's integration tests: a hub on free ports, paho 2.x device clients."""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from infra.hub import BackgroundHub, HubConfig, make_sas_token, provision_device

HOSTNAME = "tinyfleet-hub.local"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[BackgroundHub]:
    config = HubConfig(data_dir=tmp_path / "hub", hostname=HOSTNAME, mqtt_port=0, https_port=0)
    with BackgroundHub(config) as running:
        yield running


_CONNACK_V311 = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int


class Device:
    """A paho-mqtt 2.x client speaking the IoT Hub dialect the way the docs' sample does."""

    def __init__(self, server: Any, device_id: str, *, clean_session: bool = False) -> None:
        """`server` is anything with `ca_cert` and `mqtt_port` (a `HubServer`, a hub process)."""
        self.server = server
        self.device_id = device_id
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.disconnected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=paho.MQTTv311,
            clean_session=clean_session,
        )
        self.client.username_pw_set(f"{HOSTNAME}/{device_id}/?api-version=2021-04-12")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        # paho 2 reports MQTT 3.1.1 CONNACK codes as MQTT 5 reason codes; map them back.
        self.connack.put(_CONNACK_V311.get(reason.value, reason.value))

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        self.messages.put(Received(message.topic, message.payload, message.qos))

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected.set()

    def tls(self, cert: str | None = None, key: str | None = None) -> Device:
        ca = str(self.server.ca_cert)
        self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
        return self

    def sas(self, key: str, *, ttl: int = 3600) -> Device:
        token = make_sas_token(f"{HOSTNAME}/devices/{self.device_id}", key, int(time.time()) + ttl)
        self.client.username_pw_set(f"{HOSTNAME}/{self.device_id}/?api-version=2021-04-12", token)
        return self

    def connect(self, *, expect: int = 0) -> Device:
        self.client.connect("localhost", self.server.mqtt_port, keepalive=60)
        self.client.loop_start()
        code = self.connack.get(timeout=10)
        assert code == expect, f"CONNACK {code}, expected {expect}"
        return self

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def expect(self, prefix: str, timeout: float = 10) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing on {prefix!r} within {timeout}s")
            message = self.messages.get(timeout=remaining)
            if message.topic.startswith(prefix):
                return message

    def nothing_within(self, seconds: float) -> list[Received]:
        time.sleep(seconds)
        found = []
        while not self.messages.empty():
            found.append(self.messages.get_nowait())
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices(hub: BackgroundHub) -> Iterator[Any]:
    """Factory: `devices("dev1")` provisions a SAS device and returns a connected client."""
    opened: list[Device] = []

    def make(device_id: str, *, connect: bool = True, clean_session: bool = False) -> Device:
        if hub.core.store.lookup_device(device_id) is None:
            provisioned = provision_device(hub.server.config, device_id)
            key = provisioned.primary_key
        else:
            key = hub.core.store.lookup_device(device_id).primary_key  # type: ignore[union-attr]
        assert key is not None
        device = Device(hub.server, device_id, clean_session=clean_session).tls().sas(key)
        opened.append(device)
        return device.connect() if connect else device

    yield make
    for device in opened:
        device.close()


def rest(
    hub: BackgroundHub, method: str, path: str, *, policy: str = "iothubowner", **kwargs: Any
) -> Any:
    """A raw REST call with a policy token, for what the service SDK does not cover (C2D)."""
    import httpx

    port = hub.server.https_port
    key = hub.core.policies[policy][0]
    token = make_sas_token(
        f"localhost:{port}", key, int(time.time()) + 600, key_name=policy, encode="quote_plus"
    )
    headers = {"Authorization": token, **kwargs.pop("headers", {})}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(hub.server.ca_cert))) as client:
        return client.request(
            method,
            f"https://localhost:{port}{path}?api-version=2021-04-12",
            headers=headers,
            **kwargs,
        )
