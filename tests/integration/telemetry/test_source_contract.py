"""The `TelemetrySource` contract, run against every adapter that can run here: the in-memory
source and the mock hub's feed file (`infra.telemetry_source.FeedSource`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.hub import TelemetryFeed
from infra.hub._feed import NewEvent
from infra.telemetry_source import FeedSource
from service.telemetry import MemorySource, SourceConfigError, TelemetrySource

Append = Callable[[str, bytes], None]
Source = tuple[TelemetrySource, Append]


@pytest.fixture(params=["memory", "mock-hub-feed"])
def source(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TelemetrySource, Append]]:
    if request.param == "memory":
        memory = MemorySource(2)

        def append_memory(device: str, body: bytes) -> None:
            memory.append(device, body, enqueued_ms=1)

        yield memory, append_memory
        return
    feed = TelemetryFeed.open(tmp_path / "feed.sqlite", 2)

    def append(device: str, body: bytes) -> None:
        system = {"iothub-connection-device-id": device, "message-id": body.decode()}
        feed.append([NewEvent(device, body, {}, system, 1)])

    yield FeedSource(feed), append
    feed.close()


def _fill(append: Append, count: int = 12) -> None:
    for n in range(count):
        append(f"dev-{n % 5}", f"m{n}".encode())


def test_receives_each_partition_in_order_and_moves_on(
    source: tuple[TelemetrySource, Append],
) -> None:
    src, append = source
    _fill(append)
    got = src.receive(src.partitions(), 100)
    assert sorted(e.body for e in got) == sorted(f"m{n}".encode() for n in range(12))
    for partition in src.partitions():
        seqs = [e.sequence for e in got if e.partition == partition]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert src.receive(src.partitions(), 100) == []
    assert all(e.device_id and e.device_id.startswith("dev-") for e in got)


def test_max_count_and_partition_filter(source: Source) -> None:
    src, append = source
    _fill(append)
    first = src.partitions()[0]
    some = src.receive([first], 2)
    assert len(some) <= 2 and {e.partition for e in some} <= {first}
    rest = src.receive([first], 100)
    assert [e.sequence for e in some + rest] == sorted(e.sequence for e in some + rest)


def test_seek_rewinds_and_checkpoint_does_not_move(source: Source) -> None:
    src, append = source
    _fill(append)
    partition = src.partitions()[0]
    everything = src.receive([partition], 100)
    src.checkpoint(partition, everything[0].sequence)
    assert src.receive([partition], 100) == []
    src.seek(partition, everything[0].sequence)
    assert src.receive([partition], 100) == everything[1:]
    src.seek(partition, -1)
    assert src.receive([partition], 100) == everything
    assert src.last_sequence(partition) == everything[-1].sequence


def test_unknown_partitions_are_configuration_errors(
    source: tuple[TelemetrySource, Append],
) -> None:
    src, _ = source
    with pytest.raises(SourceConfigError):
        src.receive(["99"], 1)
    with pytest.raises(SourceConfigError):
        src.seek("99", 0)
