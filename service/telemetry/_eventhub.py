"""Azure IoT Hub's Event Hubs-compatible endpoint as a `TelemetrySource` (`azure-eventhub`).

`EventHubConsumerClient` pushes events to a callback on its own thread; this adapter runs one
client per owned partition and turns the push into the port's pull (`receive`) through a
bounded queue per partition. Positions and checkpoints live in our database (the worker's
`telemetry_partitions` table is the checkpoint store, committed with the rows), so `seek`
starts a partition's client after the committed sequence and `checkpoint` only records it:
no blob checkpoint store is needed, and none can disagree with the database.

Azure SDK errors become `SourceError`; a bad configuration is `SourceConfigError`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.telemetry._errors import SourceConfigError, SourceError
from service.telemetry._source import SourceEvent

__all__ = ["EventHubConfig", "EventHubSource", "event_from_eventdata"]

DEVICE_ID = b"iothub-connection-device-id"
SEQUENCE = b"x-opt-sequence-number"
ENQUEUED = b"x-opt-enqueued-time"
_QUEUE_LIMIT = 10_000


@dataclass(frozen=True)
class EventHubConfig:
    """Where the feed is: the built-in endpoint's connection string (with `EntityPath`, or the
    event hub name given separately) and the consumer group the service owns."""

    connection_string: str
    eventhub_name: str | None = None
    consumer_group: str = "$Default"
    prefetch: int = 300
    max_batch: int = 1000

    def __post_init__(self) -> None:
        from azure.eventhub import parse_connection_string

        try:
            parsed = parse_connection_string(self.connection_string)
        except (ValueError, TypeError, AttributeError) as exc:
            raise SourceConfigError(f"invalid Event Hubs connection string: {exc}") from exc
        if not (parsed.eventhub_name or self.eventhub_name):
            raise SourceConfigError(
                "the connection string has no EntityPath and no eventhub_name was given"
            )
        if not self.consumer_group or len(self.consumer_group) > 50:
            raise SourceConfigError("consumer_group must be 1 to 50 characters")
        if not 1 <= self.prefetch <= 10_000 or not 1 <= self.max_batch <= 10_000:
            raise SourceConfigError("prefetch and max_batch must be in [1, 10000]")


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def event_from_eventdata(partition: str, event: Any) -> SourceEvent:
    """An `azure.eventhub.EventData` as received from IoT Hub, in the port's terms.

    Raises:
        SourceError: the event lacks the sequence number every received event has.
    """
    system: Mapping[bytes, Any] = event.system_properties
    sequence = event.sequence_number
    if sequence is None:
        raise SourceError("an event without a sequence number (not a received event?)")
    enqueued = system.get(ENQUEUED)
    from azure.eventhub.amqp import AmqpMessageBodyType

    if event.body_type == AmqpMessageBodyType.DATA:
        data = b"".join(bytes(section) for section in event.body)
    else:  # IoT Hub sends data sections; a value or sequence body is re-encoded as JSON text
        data = event.body_as_str().encode("utf-8")
    properties = {
        _text(k) or "": _text(v) for k, v in (event.properties or {}).items() if k is not None
    }
    return SourceEvent(
        partition=partition,
        sequence=int(sequence),
        enqueued_ms=int(enqueued) if enqueued is not None else 0,
        body=data,
        device_id=_text(system.get(DEVICE_ID)),
        message_id=_text(event.message_id),
        properties=properties,
    )


class _Partition:
    def __init__(self) -> None:
        self.queue: queue.Queue[SourceEvent] = queue.Queue(_QUEUE_LIMIT)
        self.after = -1
        self.client: Any = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.last: int | None = None


class EventHubSource:
    """One consumer client per owned partition, started on the first `receive`."""

    def __init__(self, config: EventHubConfig) -> None:
        self.config = config
        try:
            self._ids = self._client().get_partition_ids()
        except Exception as exc:
            raise SourceError(f"cannot list the event hub's partitions: {exc}") from exc
        self._parts = {p: _Partition() for p in self._ids}

    def _client(self) -> Any:
        from azure.eventhub import EventHubConsumerClient

        return EventHubConsumerClient.from_connection_string(
            self.config.connection_string,
            consumer_group=self.config.consumer_group,
            eventhub_name=self.config.eventhub_name,
        )

    def _get(self, partition: str) -> _Partition:
        if partition not in self._parts:
            raise SourceConfigError(f"partition {partition!r} is not in {self._ids}")
        return self._parts[partition]

    def partitions(self) -> list[str]:
        return list(self._ids)

    def seek(self, partition: str, after_sequence: int) -> None:
        part = self._get(partition)
        self._stop(part)
        part.after = after_sequence
        part.queue = queue.Queue(_QUEUE_LIMIT)

    def _start(self, partition: str, part: _Partition) -> None:
        client = self._client()
        events = part.queue

        def on_batch(context: Any, batch: list[Any]) -> None:
            props = getattr(context, "last_enqueued_event_properties", None) or {}
            if props.get("sequence_number") is not None:
                part.last = int(props["sequence_number"])
            for event in batch:
                events.put(event_from_eventdata(partition, event))

        def run() -> None:
            try:
                client.receive_batch(
                    on_batch,
                    partition_id=partition,
                    starting_position=part.after if part.after >= 0 else "-1",
                    starting_position_inclusive=False,
                    max_batch_size=self.config.max_batch,
                    prefetch=self.config.prefetch,
                    track_last_enqueued_event_properties=True,
                )
            except BaseException as exc:
                part.error = exc

        part.client = client
        part.thread = threading.Thread(target=run, name=f"eventhub-{partition}", daemon=True)
        part.thread.start()

    def _stop(self, part: _Partition) -> None:
        if part.client is not None:
            part.client.close()
            if part.thread is not None:
                part.thread.join(timeout=10)
        part.client, part.thread, part.error = None, None, None

    def receive(self, partitions: Sequence[str], max_count: int) -> list[SourceEvent]:
        out: list[SourceEvent] = []
        for partition in partitions:
            part = self._get(partition)
            if part.error is not None:
                error = part.error
                self._stop(part)
                raise SourceError(f"event hub partition {partition} failed: {error}") from error
            if part.client is None:
                self._start(partition, part)
            while len(out) < max_count:
                try:
                    event = part.queue.get_nowait()
                except queue.Empty:
                    break
                part.after = event.sequence
                out.append(event)
        return out

    def checkpoint(self, partition: str, sequence: int) -> None:
        """The database holds the checkpoint (see the module docstring); nothing to do here."""
        self._get(partition)

    def last_sequence(self, partition: str) -> int | None:
        return self._get(partition).last

    def close(self) -> None:
        for part in self._parts.values():
            self._stop(part)
