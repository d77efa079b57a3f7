"""The telemetry feed: partitions by device, dense sequence numbers, checkpoints that resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.hub import FeedConsumer, HubConfigError, TelemetryFeed
from infra.hub._feed import NewEvent


def _event(device: str, n: int) -> NewEvent:
    return NewEvent(device, b"%d" % n, {"n": str(n)}, {"message-id": str(n)}, 1000 + n)


def test_one_device_stays_in_one_partition_in_order(tmp_path: Path) -> None:
    feed = TelemetryFeed.open(tmp_path / "feed.sqlite", 4)
    feed.append([_event(d, n) for n in range(20) for d in ("a", "b", "c", "d", "e")])
    seen: dict[str, list[int]] = {}
    for partition in feed.partition_ids:
        events = feed.read(partition, max_count=1000)
        assert [e.sequence_number for e in events] == list(range(len(events)))
        for e in events:
            assert e.partition_id == feed.partition_for(e.device_id) == partition
            seen.setdefault(e.device_id, []).append(int(e.body))
    assert seen == {d: list(range(20)) for d in "abcde"}


def test_a_consumer_resumes_after_its_committed_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    writer = TelemetryFeed.open(path, 2)
    writer.append([_event("dev", n) for n in range(10)])
    consumer = FeedConsumer(TelemetryFeed.open(path), "service")
    assert [int(e.body) for e in consumer.receive(4)] == [0, 1, 2, 3]
    consumer.commit()
    assert [int(e.body) for e in consumer.receive(2)] == [4, 5]  # received, not committed
    restarted = FeedConsumer(TelemetryFeed.open(path), "service")
    assert [int(e.body) for e in restarted.receive(100)] == list(range(4, 10))
    other_group = FeedConsumer(TelemetryFeed.open(path), "analytics")
    assert len(other_group.receive(100)) == 10


def test_sequence_numbers_continue_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "feed.sqlite"
    TelemetryFeed.open(path, 1).append([_event("a", 0), _event("a", 1)])
    [event] = TelemetryFeed.open(path).append([_event("a", 2)])
    assert event.sequence_number == 2


def test_partition_count_is_fixed_at_creation(tmp_path: Path) -> None:
    TelemetryFeed.open(tmp_path / "feed.sqlite", 4)
    with pytest.raises(HubConfigError):
        TelemetryFeed.open(tmp_path / "feed.sqlite", 8)
    with pytest.raises(HubConfigError):
        TelemetryFeed.open(tmp_path / "other.sqlite")
