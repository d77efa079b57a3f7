"""End to end on the mock hub: MQTT devices publish telemetry batches, the hub appends them to its
feed, `infra.telemetry_source.FeedSource` reads it, the worker commits and checkpoints."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

from device_agent.protocol.telemetry import encode_batch, message_properties
from infra.hub import BackgroundHub, TelemetryFeed
from infra.telemetry_source import FeedSource
from service.telemetry import IngestWorker
from tests.integration.hub.conftest import devices, hub  # noqa: F401 - fixtures
from tests.integration.telemetry._world import Fleet
from tests.integration.telemetry.conftest import Db


def topic(device_id: str, properties: dict[str, str]) -> str:
    bag = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in properties.items())
    return f"devices/{device_id}/messages/events/{bag}"


def test_devices_to_committed_rows_through_the_mock_hub(
    hub: BackgroundHub,  # noqa: F811
    devices: Any,  # noqa: F811
    sqlite_db: Db,
) -> None:
    fleet = Fleet()
    alice, bob = devices("alice"), devices("bob")
    for _ in range(3):
        for dev in (alice, bob):
            batch = fleet.batch(dev.device_id, n=8)
            dev.publish(topic(dev.device_id, message_properties(batch)), encode_batch(batch))
    forged = fleet.batch("alice", n=8)  # bob sends a batch that claims to be alice's
    bob.publish(topic("bob", message_properties(forged)), encode_batch(forged))
    bob.publish(topic("bob", message_properties(fleet.batch("bob"))), encode_batch(forged))

    feed_path = hub.server.config.feed_path
    for _ in range(200):  # the hub commits its feed in batches; wait until all 8 are there
        with_feed = TelemetryFeed.open(feed_path)
        total = sum(with_feed.last_sequence(p) + 1 for p in with_feed.partition_ids)
        with_feed.close()
        if total == 8:
            break
        threading.Event().wait(0.05)
    source = FeedSource.open(feed_path, "tinyfleet")
    worker = IngestWorker(source, sqlite_db.store)
    report = worker.run_once()
    assert (report.received, report.messages, report.dead_letters) == (8, 6, 2)
    assert report.by_reason == {"wrong-device": 2}
    assert sqlite_db.count("telemetry_inference") == 48
    assert worker.run_once().received == 0

    # A fresh reader in the consumer group starts after the checkpoints the worker committed.
    again = FeedSource.open(feed_path, "tinyfleet")
    assert again.receive(again.partitions(), 100) == []
    source.close()
    again.close()
