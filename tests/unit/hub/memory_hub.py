"""An in-memory hub for unit and security tests.

The real engine, session and driver run over a memory transport.

`MemoryTransport` is the asyncio transport port's in-memory implementation: what the hub writes
is decoded back into packets, so tests talk MQTT to the real `MqttConnection` without sockets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from infra.hub import HubConfig, HubLimits
from infra.hub import _codec as mqtt
from infra.hub._auth import make_sas_token
from infra.hub._feed import TelemetryFeed
from infra.hub._hub import HubCore
from infra.hub._mqtt_driver import ConnectionTable, MqttConnection
from infra.hub._store import DeviceRecord, HubStore
from infra.hub._twin import Twin

HOST = "unit-hub.local"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class MemoryTransport(asyncio.Transport):
    def __init__(self, peer_certificate: bytes | None = None) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self._decoder = mqtt.PacketDecoder()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def packets(self) -> list[mqtt.Packet]:
        data, self.written = bytes(self.written), bytearray()
        return self._decoder.feed(data)


class MemoryDevice:
    """One device connection into the in-memory hub."""

    def __init__(self, hub: MemoryHub, device_id: str) -> None:
        self.hub = hub
        self.device_id = device_id
        self.transport = MemoryTransport()
        self.conn = MqttConnection(hub.core, hub.table)
        self.conn.connection_made(self.transport)

    def send(self, *packets: mqtt.Packet) -> list[mqtt.Packet]:
        return self.send_bytes(b"".join(mqtt.encode(p) for p in packets))

    def send_bytes(self, data: bytes) -> list[mqtt.Packet]:
        self.conn.data_received(data)
        self.hub.settle()
        return self.transport.packets()

    def connect(
        self, *, key: str = KEY, clean: bool = False, expiry: int = 4_000_000_000
    ) -> list[mqtt.Packet]:
        token = make_sas_token(f"{HOST}/devices/{self.device_id}", key, expiry)
        return self.send(
            mqtt.Connect(
                client_id=self.device_id,
                keepalive=60,
                clean_session=clean,
                username=f"{HOST}/{self.device_id}/?api-version=2021-04-12",
                password=token.encode(),
            )
        )

    def received(self) -> list[mqtt.Packet]:
        self.hub.settle()
        return self.transport.packets()

    def lost(self) -> None:
        self.conn.connection_lost(None)
        self.hub.settle()


class MemoryHub:
    def __init__(self, tmp: Path, limits: HubLimits | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.now = 1_700_000_000.0
        config = HubConfig(data_dir=tmp, hostname=HOST, limits=limits or HubLimits())
        self.core = HubCore(
            config,
            HubStore(":memory:"),
            TelemetryFeed.in_memory(2),
            clock=lambda: self.now,
            schedule=self.loop.call_soon,
        )
        self.table = ConnectionTable(config.limits, self.loop.call_soon, clock=lambda: self.now)

    def add_device(self, device_id: str, **fields: Any) -> None:
        record = DeviceRecord(device_id, "1", primary_key=KEY, secondary_key=KEY, **fields)
        self.core.store.put_device(record, Twin.new(device_id))

    def device(self, device_id: str, *, connect: bool = True) -> MemoryDevice:
        if self.core.store.lookup_device(device_id) is None:
            self.add_device(device_id)
        device = MemoryDevice(self, device_id)
        if connect:
            acks = device.connect()
            assert isinstance(acks[0], mqtt.ConnAck) and acks[0].return_code == 0, acks
        return device

    def settle(self) -> None:
        """Run everything the engine scheduled (batch flushes, coalesced writes)."""
        for _ in range(5):
            self.loop.call_soon(self.loop.stop)
            self.loop.run_forever()

    def close(self) -> None:
        self.loop.close()
        asyncio.set_event_loop(None)
