"""D2C throughput of the hub against mosquitto and amqtt, and many idle TLS connections.

Quick by default; `TINYFLEET_BENCH_FULL=1` for the figures in the report. Never timed assertions:
the asserts check that every message arrived; the figures are printed as ratios.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from infra.hub import FeedConsumer, TelemetryFeed, make_sas_token
from tests.bench.hub.conftest import (
    FULL,
    HOSTNAME,
    KEY,
    Server,
    provision_bulk,
    start_amqtt,
    start_hub,
    start_mosquitto,
)
from tests.bench.hub.loadgen import BrokerSubscriber, Identity, hold_connections, publish_load

DEVICES = 100 if FULL else 10
MESSAGES = 1000 if FULL else 200
WINDOW = 20
PAYLOAD = b'{"model":"kws-v3","latency_ms":12.5,"score":0.93,"label":"yes","core":1}'
IDLE_CONNECTIONS = 10_000 if FULL else 300

pytestmark = pytest.mark.bench


def _hub_identities(count: int) -> list[Identity]:
    expiry = int(time.time()) + 3600
    return [
        Identity(
            f"bench{n:05d}",
            f"{HOSTNAME}/bench{n:05d}/?api-version=2021-04-12",
            make_sas_token(f"{HOSTNAME}/devices/bench{n:05d}", KEY, expiry).encode(),
        )
        for n in range(count)
    ]


def _topic(who: Identity) -> str:
    return f"devices/{who.client_id}/messages/events/%24.ct=application%2Fjson"


async def _through_hub(server: Server, feed_path: Path) -> tuple[int, float]:
    consumer = FeedConsumer(TelemetryFeed.open(feed_path), "bench")
    seen = 0

    def received() -> int:
        nonlocal seen
        seen += len(consumer.receive(100_000))
        return seen

    return await publish_load(
        "127.0.0.1", server.port, server.ca_cert, _hub_identities(DEVICES), _topic,
        MESSAGES, WINDOW, PAYLOAD, received,
    )  # fmt: skip


async def _through_broker(server: Server) -> tuple[int, float]:
    from tests.bench.hub.loadgen import client_context

    subscriber = BrokerSubscriber(
        "127.0.0.1", server.port, client_context(server.ca_cert), "devices/+/messages/events/#"
    )
    await subscriber.start()
    try:
        identities = [Identity(f"bench{n:05d}") for n in range(DEVICES)]
        return await publish_load(
            "127.0.0.1", server.port, server.ca_cert, identities, _topic,
            MESSAGES, WINDOW, PAYLOAD, lambda: subscriber.received,
        )  # fmt: skip
    finally:
        subscriber.stop()


def test_d2c_throughput_against_mosquitto_and_amqtt(
    tmp_path: Path, pki: tuple[Path, Path, Path], servers: list[Server]
) -> None:
    total = DEVICES * MESSAGES
    rates: dict[str, float] = {}
    data = tmp_path / "hub"
    provision_bulk(data, DEVICES)
    hub = start_hub(data, pki)
    servers.append(hub)
    got, seconds = asyncio.run(_through_hub(hub, data / "feed.sqlite"))
    assert got == total
    rates["hub"] = got / seconds
    hub.stop()
    for start in (start_mosquitto, start_amqtt):
        broker = start(tmp_path, pki)
        servers.append(broker)
        got, seconds = asyncio.run(_through_broker(broker))
        assert got == total, f"{broker.name} relayed {got} of {total}"
        rates[broker.name] = got / seconds
        broker.stop()
    print(
        f"\nD2C QoS 1 over TLS, {DEVICES} devices x {MESSAGES} messages, window {WINDOW}, "
        f"{len(PAYLOAD)} B payload:\n"
        + "".join(f"  {name:9s} {rate:9.0f} msg/s\n" for name, rate in rates.items())
        + f"  hub/mosquitto = {rates['hub'] / rates['mosquitto']:.2f}, "
        f"hub/amqtt = {rates['hub'] / rates['amqtt']:.2f}"
    )


def test_many_idle_tls_connections_and_hub_memory(
    tmp_path: Path, pki: tuple[Path, Path, Path], servers: list[Server]
) -> None:
    data = tmp_path / "hub"
    provision_bulk(data, IDLE_CONNECTIONS)
    hub = start_hub(data, pki)
    servers.append(hub)
    baseline = hub.rss_bytes()

    async def hold() -> tuple[int, float, int]:
        began = time.perf_counter()
        writers = await hold_connections(
            "127.0.0.1", hub.port, hub.ca_cert, _hub_identities(IDLE_CONNECTIONS)
        )
        elapsed = time.perf_counter() - began
        await asyncio.sleep(1.0)
        rss = hub.rss_bytes()
        for writer in writers:
            writer.close()
        return len(writers), elapsed, rss

    opened, seconds, rss = asyncio.run(hold())
    assert opened == IDLE_CONNECTIONS
    per_connection = (rss - baseline) / opened
    print(
        f"\n{opened} TLS device connections held open (opened in {seconds:.1f} s): hub RSS "
        f"{rss / 2**20:.0f} MiB (idle hub {baseline / 2**20:.0f} MiB, "
        f"{per_connection / 1024:.1f} KiB per connection; ratio to the 2 GiB aim "
        f"{rss / 2**31:.2f})"
    )
