"""One MQTT 3.1.1 load generator for the hub and the two brokers it is compared with.

Asyncio, TLS, the hub's own codec on the client side: `publish_load` runs many device
connections that each keep a window of QoS 1 PUBLISHes in flight; `BrokerSubscriber` is the
one subscriber a plain broker relays them to; `hold_connections` opens many idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.hub import _codec as mqtt


@dataclass(frozen=True)
class Identity:
    client_id: str
    username: str | None = None
    password: bytes | None = None


def client_context(ca_cert: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_cert)
    return context


async def _connect(
    host: str, port: int, context: ssl.SSLContext, who: Identity, *, clean: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, mqtt.PacketDecoder]:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname="localhost", limit=1 << 20
    )
    connect = mqtt.Connect(who.client_id, 600, clean, who.username, who.password)
    writer.write(mqtt.encode(connect))
    decoder = mqtt.PacketDecoder()
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError(f"{who.client_id}: closed before CONNACK")
        packets = decoder.feed(data)
        if packets:
            ack = packets[0]
            if not isinstance(ack, mqtt.ConnAck) or ack.return_code != 0:
                raise ConnectionError(f"{who.client_id}: refused with {ack}")
            return reader, writer, decoder


async def _publisher(
    host: str,
    port: int,
    context: ssl.SSLContext,
    who: Identity,
    topic: str,
    count: int,
    window: int,
    payload: bytes,
    start: asyncio.Event,
) -> int:
    reader, writer, decoder = await _connect(host, port, context, who)
    await start.wait()
    credit = asyncio.Semaphore(window)
    acked = 0
    done = asyncio.Event()

    async def read_acks() -> None:
        nonlocal acked
        while acked < count:
            data = await reader.read(65536)
            if not data:
                break
            for packet in decoder.feed(data):
                if isinstance(packet, mqtt.PubAck):
                    acked += 1
                    credit.release()
        done.set()

    acks = asyncio.create_task(read_acks())
    for n in range(count):
        await credit.acquire()
        writer.write(mqtt.encode(mqtt.Publish(topic, payload, 1, packet_id=n % 65535 + 1)))
        if n % window == window - 1:
            await writer.drain()
    await done.wait()
    acks.cancel()
    writer.write(mqtt.encode(mqtt.Disconnect()))
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return acked


class BrokerSubscriber:
    """The one subscriber of a plain broker: QoS 1, acknowledges everything, counts."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, topic_filter: str) -> None:
        self.host, self.port, self.context, self.topic_filter = host, port, context, topic_filter
        self.received = 0
        self.last_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        who = Identity("bench-subscriber")
        reader, writer, decoder = await _connect(
            self.host, self.port, self.context, who, clean=True
        )
        writer.write(mqtt.encode(mqtt.Subscribe(1, ((self.topic_filter, 1),))))
        while True:
            packets = decoder.feed(await reader.read(65536))
            if any(isinstance(p, mqtt.SubAck) for p in packets):
                break
        self._task = asyncio.create_task(self._run(reader, writer, decoder))

    async def _run(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: mqtt.PacketDecoder,
    ) -> None:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                return
            out = []
            for packet in decoder.feed(data):
                if isinstance(packet, mqtt.Publish):
                    self.received += 1
                    if packet.packet_id is not None:
                        out.append(mqtt.encode(mqtt.PubAck(packet.packet_id)))
            self.last_at = time.perf_counter()
            if out:
                writer.write(b"".join(out))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def publish_load(
    host: str,
    port: int,
    ca_cert: str,
    identities: list[Identity],
    topic_of: Callable[[Identity], str],
    count: int,
    window: int,
    payload: bytes,
    received: Callable[[], int],
    timeout: float = 240,
) -> tuple[int, float]:
    """Connect everyone, then publish; returns (messages seen by the consumer, seconds)."""
    context = client_context(ca_cert)
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(
            _publisher(host, port, context, who, topic_of(who), count, window, payload, start)
        )
        for who in identities
    ]
    await asyncio.sleep(0)
    # Let every connection finish its CONNECT before the clock starts.
    await asyncio.sleep(0.5 + 0.01 * len(identities))
    began = time.perf_counter()
    start.set()
    total = count * len(identities)
    deadline = began + timeout
    while received() < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - began
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    return received(), elapsed


async def hold_connections(
    host: str, port: int, ca_cert: str, identities: list[Identity], parallel: int = 200
) -> list[asyncio.StreamWriter]:
    """Open (and keep open) one connection per identity, `parallel` handshakes at a time."""
    context = client_context(ca_cert)
    gate = asyncio.Semaphore(parallel)
    writers: list[asyncio.StreamWriter] = []

    async def one(who: Identity) -> None:
        async with gate:
            _, writer, _ = await _connect(host, port, context, who)
            writers.append(writer)

    await asyncio.gather(*(one(who) for who in identities))
    return writers
