"""The mock hub's telemetry feed as a `service.telemetry.TelemetrySource`.

The service may not import infra, so the port lives in `service.telemetry` and this adapter
implements it over `infra.hub.TelemetryFeed` (the SQLite file the hub appends to), reading each
owned partition from its own position and checkpointing per partition in the feed's consumer
group, like an Event Hubs consumer with a checkpoint store. Hub errors become `SourceError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from infra.hub import FeedConsumer, FeedEvent, HubError, TelemetryFeed
from service.telemetry import SourceConfigError, SourceError, SourceEvent

__all__ = ["FeedSource", "feed_source", "source_event"]

DEVICE_ID = "iothub-connection-device-id"
MESSAGE_ID = "message-id"


def source_event(event: FeedEvent) -> SourceEvent:
    """One feed event in the port's terms; the hub's device id wins over the event's field."""
    system = event.system_properties
    return SourceEvent(
        partition=str(event.partition_id),
        sequence=event.sequence_number,
        enqueued_ms=event.enqueued_ms,
        body=event.body,
        device_id=system.get(DEVICE_ID) or event.device_id or None,
        message_id=system.get(MESSAGE_ID) or event.properties.get("$.mid"),
        properties=dict(event.properties),
    )


class FeedSource:
    """Reads owned partitions of the mock hub's feed; checkpoints in its consumer group."""

    def __init__(self, feed: TelemetryFeed, consumer_group: str = "$Default") -> None:
        self._feed = feed
        self._group = consumer_group
        self._position: dict[str, int] = {}
        try:
            for partition in feed.partition_ids:
                committed = feed.checkpoint(consumer_group, partition)
                self._position[str(partition)] = -1 if committed is None else committed
        except HubError as exc:
            raise SourceError(f"cannot read the feed's checkpoints: {exc}") from exc

    @classmethod
    def open(cls, path: Path | str, consumer_group: str = "$Default") -> FeedSource:
        try:
            return cls(TelemetryFeed.open(path), consumer_group)
        except HubError as exc:
            raise SourceConfigError(f"cannot open the telemetry feed {path}: {exc}") from exc

    @classmethod
    def from_consumer(cls, consumer: FeedConsumer) -> FeedSource:
        return cls(consumer.feed, consumer.consumer_group)

    def _partition(self, partition: str) -> int:
        if partition not in self._position:
            raise SourceConfigError(f"partition {partition!r} is not in {sorted(self._position)}")
        return int(partition)

    def partitions(self) -> list[str]:
        return list(self._position)

    def seek(self, partition: str, after_sequence: int) -> None:
        self._partition(partition)
        self._position[partition] = after_sequence

    def receive(self, partitions: Sequence[str], max_count: int) -> list[SourceEvent]:
        out: list[SourceEvent] = []
        try:
            for partition in partitions:
                if len(out) >= max_count:
                    break
                events = self._feed.read(
                    self._partition(partition), self._position[partition], max_count - len(out)
                )
                if events:
                    self._position[partition] = events[-1].sequence_number
                    out.extend(source_event(e) for e in events)
        except HubError as exc:
            raise SourceError(f"telemetry feed read failed: {exc}") from exc
        return out

    def checkpoint(self, partition: str, sequence: int) -> None:
        try:
            self._feed.commit_checkpoint(self._group, self._partition(partition), sequence)
        except HubError as exc:
            raise SourceError(f"telemetry feed checkpoint failed: {exc}") from exc

    def last_sequence(self, partition: str) -> int | None:
        try:
            return self._feed.last_sequence(self._partition(partition))
        except HubError as exc:
            raise SourceError(f"telemetry feed read failed: {exc}") from exc

    def close(self) -> None:
        self._feed.close()


def feed_source(path: Path | str, consumer_group: str = "$Default") -> FeedSource:
    """`mockhub:PATH` in the settings: the mock hub's feed file as a telemetry source."""
    return FeedSource.open(path, consumer_group)
