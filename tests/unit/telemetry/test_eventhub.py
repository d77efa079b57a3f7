"""The Event Hubs adapter's translation of real `EventData` objects, and its config errors."""

from __future__ import annotations

import pytest
from azure.eventhub import EventData

from device_agent.protocol.telemetry import TelemetryBatch, encode_batch
from service.telemetry import (
    EventHubConfig,
    SourceConfigError,
    SourceError,
    event_from_eventdata,
)

CONN = (
    "Endpoint=sb://ihsuprodxx.servicebus.windows.net/;SharedAccessKeyName=service;"
    "SharedAccessKey=c2VjcmV0;EntityPath=tinyfleet-hub"
)


def received(body: bytes, *, seq: int = 41, device: bytes | None = b"dev-1") -> EventData:
    """An EventData shaped like one IoT Hub delivers through its built-in endpoint."""
    event = EventData(body)
    event.message_id = "dev-1:3"
    event.properties = {b"tf-schema": b"tinyfleet.telemetry/1"}
    annotations = event.raw_amqp_message.annotations
    annotations[b"x-opt-sequence-number"] = seq
    annotations[b"x-opt-enqueued-time"] = 1_795_000_000_123
    annotations[b"x-opt-offset"] = b"4096"
    if device is not None:
        annotations[b"iothub-connection-device-id"] = device
    return event


def test_a_received_event_translates_field_by_field() -> None:
    body = encode_batch(TelemetryBatch("dev-1", 3, "rel-2"))
    event = event_from_eventdata("2", received(body))
    assert (event.partition, event.sequence, event.enqueued_ms) == ("2", 41, 1_795_000_000_123)
    assert event.body == body and event.device_id == "dev-1" and event.message_id == "dev-1:3"
    assert event.properties == {"tf-schema": "tinyfleet.telemetry/1"}


def test_bytes_that_are_not_utf8_pass_through_untouched() -> None:
    event = event_from_eventdata("0", received(b"\xff\xfe{"))
    assert event.body == b"\xff\xfe{"


def test_an_event_without_a_device_id_has_none() -> None:
    assert event_from_eventdata("0", received(b"{}", device=None)).device_id is None


def test_an_event_that_was_never_received_is_refused() -> None:
    with pytest.raises(SourceError, match="sequence number"):
        event_from_eventdata("0", EventData(b"{}"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connection_string": "not a connection string"}, "connection string"),
        ({"connection_string": CONN.replace(";EntityPath=tinyfleet-hub", "")}, "EntityPath"),
        ({"connection_string": CONN, "consumer_group": ""}, "consumer_group"),
        ({"connection_string": CONN, "prefetch": 0}, "prefetch"),
    ],
    ids=["garbage", "no-entity-path", "empty-consumer-group", "zero-prefetch"],
)
def test_configuration_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SourceConfigError, match=match):
        EventHubConfig(**kwargs)  # type: ignore[arg-type]


def test_a_valid_configuration() -> None:
    config = EventHubConfig(CONN.replace(";EntityPath=tinyfleet-hub", ""), eventhub_name="hub")
    assert config.consumer_group == "$Default"
