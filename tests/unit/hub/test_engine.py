"""The engine, session and driver wired together in memory: one device's view of the hub."""

from __future__ import annotations

import asyncio
import json

import pytest

from infra.hub import HubLimits, RequestRefused
from infra.hub import _codec as mqtt
from infra.hub._feed import FeedConsumer
from tests.unit.hub.memory_hub import MemoryHub

ALL_TOPICS = (
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
    "$iothub/methods/POST/#",
)


def subscribe(device, *filters: str) -> list[mqtt.Packet]:  # type: ignore[no-untyped-def]
    return device.send(mqtt.Subscribe(1, tuple((f, 1) for f in filters)))


def test_telemetry_is_acknowledged_only_once_stored_with_its_properties(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    topic = (
        "devices/dev1/messages/events/"
        "%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp&a%2Bb=c"
    )
    dev.conn.data_received(mqtt.encode(mqtt.Publish(topic, b'{"t": 21.5}', 1, packet_id=9)))
    assert dev.transport.packets() == []  # not yet stored, not yet acknowledged
    memhub.settle()
    assert dev.transport.packets() == [mqtt.PubAck(9)]
    [event] = FeedConsumer(memhub.core.feed).receive()
    assert event.device_id == "dev1" and event.body == b'{"t": 21.5}'
    assert event.properties == {"alert": "high temp", "a+b": "c"}
    assert event.system_properties["message-id"] == "m-1"
    assert event.system_properties["content-type"] == "application/json"
    assert event.system_properties["content-encoding"] == "utf-8"
    assert event.system_properties["iothub-connection-device-id"] == "dev1"
    assert event.enqueued_ms == int(memhub.now * 1000)


def test_retained_telemetry_is_forwarded_with_the_mqtt_retain_property(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    assert dev.send(
        mqtt.Publish("devices/dev1/messages/events/", b"x", 1, retain=True, packet_id=2)
    ) == [mqtt.PubAck(2)]
    [event] = FeedConsumer(memhub.core.feed).receive()
    assert event.properties == {"mqtt-retain": "true"}


def test_twin_get_and_reported_patch_answer_on_the_owning_connection(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    subscribe(dev, *ALL_TOPICS)
    [ack, response] = dev.send(mqtt.Publish("$iothub/twin/GET/?$rid=r1", b" ", 1, packet_id=3))
    assert ack == mqtt.PubAck(3)
    assert response.topic == "$iothub/twin/res/200/?$rid=r1"
    assert json.loads(response.payload) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    [response] = dev.send(
        mqtt.Publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r2", b'{"fw": "1.0", "n": {"a": 1}}'
        )
    )
    assert response.topic == "$iothub/twin/res/204/?$rid=r2&$version=2" and response.payload == b""
    dev.send(
        mqtt.Publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r3", b'{"n": {"a": null, "b": 2}}'
        )
    )
    twin = memhub.core.store.twins["dev1"]
    assert twin.reported == {"fw": "1.0", "n": {"b": 2}} and twin.reported_version == 3


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'{"bad.key": 1}', 400),
        (b'{"$bad": 1}', 400),
        (json.dumps({"big": "x" * 4097}).encode(), 400),
        (json.dumps({f"k{i}": "x" * 4000 for i in range(9)}).encode(), 400),
        (
            json.dumps(
                {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}
            ).encode(),
            400,
        ),
        (b'{"n": 4503599627370496}', 400),
    ],
    ids=[
        "bad-json",
        "not-object",
        "dot-in-key",
        "dollar-key",
        "long-string",
        "over-32kb",
        "too-deep",
        "huge-int",
    ],
)
def test_bad_reported_patches_get_400_and_change_nothing(
    memhub: MemoryHub, payload: bytes, status: int
) -> None:
    dev = memhub.device("dev1")
    subscribe(dev, "$iothub/twin/res/#")
    [response] = dev.send(mqtt.Publish("$iothub/twin/PATCH/properties/reported/?$rid=x", payload))
    assert response.topic.startswith(f"$iothub/twin/res/{status}/?$rid=x")
    assert memhub.core.store.twins["dev1"].reported_version == 1


def test_twin_operations_beyond_the_rate_get_429(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    subscribe(dev, "$iothub/twin/res/#")
    burst = memhub.core.config.limits.twin_ops_burst
    statuses = [
        dev.send(mqtt.Publish(f"$iothub/twin/GET/?$rid={i}", b""))[0].topic.split("/")[3]
        for i in range(burst + 3)
    ]
    assert statuses[:burst] == ["200"] * burst and statuses[burst:] == ["429"] * 3
    memhub.now += 1.0  # tokens come back with time
    assert dev.send(mqtt.Publish("$iothub/twin/GET/?$rid=z", b""))[0].topic.startswith(
        "$iothub/twin/res/200"
    )


def test_desired_patches_reach_only_a_subscribed_owner_with_their_version(
    memhub: MemoryHub,
) -> None:
    dev, other = memhub.device("dev1"), memhub.device("dev2")
    subscribe(dev, *ALL_TOPICS)
    subscribe(other, *ALL_TOPICS)
    twin = memhub.core.update_twin(
        "dev1", {"properties": {"desired": {"interval": 5}}}, None, replace_all=False
    )
    [note] = dev.received()
    assert note.topic == "$iothub/twin/PATCH/properties/desired/?$version=2"
    assert json.loads(note.payload) == {"interval": 5, "$version": 2}
    assert other.received() == []
    with pytest.raises(RequestRefused) as stale:
        memhub.core.update_twin("dev1", {"tags": {"a": 1}}, '"AAAAAAAAAAE="', replace_all=False)
    assert stale.value.status == 412
    memhub.core.update_twin(
        "dev1", {"properties": {"desired": {"x": 1}}}, f'"{twin.etag}"', replace_all=True
    )
    [note] = dev.received()
    assert json.loads(note.payload) == {"x": 1, "$version": 3}


def test_c2d_waits_for_the_device_and_survives_a_reconnect_until_acknowledged(
    memhub: MemoryHub,
) -> None:
    memhub.add_device("dev1")
    memhub.core.send_c2d("dev1", b"hello", {"$.mid": "c1", "color": "red"})
    dev = memhub.device("dev1")
    [suback, delivery] = subscribe(dev, "devices/dev1/messages/devicebound/#")
    assert isinstance(suback, mqtt.SubAck) and suback.return_codes == (1,)
    assert delivery.qos == 1 and delivery.payload == b"hello"
    assert delivery.topic == (
        "devices/dev1/messages/devicebound/%24.mid=c1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&color=red"
    )
    dev.lost()  # no PUBACK: the message stays queued, and so does the subscription (clean 0)
    again = memhub.device("dev1", connect=False)
    [connack, redelivery] = again.connect()
    assert connack == mqtt.ConnAck(True, 0) and redelivery.payload == b"hello"
    assert again.send(mqtt.PubAck(redelivery.packet_id)) == []
    assert memhub.core.store.count_c2d("dev1") == 0


def test_a_clean_session_forgets_subscriptions_but_not_the_c2d_queue(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    subscribe(dev, "devices/dev1/messages/devicebound/#")
    dev.lost()
    memhub.core.send_c2d("dev1", b"queued", {})
    fresh = memhub.device("dev1", connect=False)
    assert fresh.connect(clean=True) == [mqtt.ConnAck(False, 0)]
    [_, delivery] = subscribe(fresh, "devices/dev1/messages/devicebound/#")
    assert delivery.payload == b"queued"


def test_the_c2d_queue_holds_at_most_50_messages(memhub: MemoryHub) -> None:
    memhub.add_device("dev1")
    for i in range(50):
        memhub.core.send_c2d("dev1", b"%d" % i, {})
    with pytest.raises(RequestRefused) as full:
        memhub.core.send_c2d("dev1", b"one too many", {})
    assert full.value.status == 403 and full.value.code == "DeviceMaximumQueueDepthExceeded"


def test_direct_methods_need_a_subscription_answer_or_time_out(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = MemoryHub(tmp_path, HubLimits(method_timeout_min_s=1))
    try:
        dev = hub.device("dev1")

        async def scenario() -> None:
            with pytest.raises(RequestRefused) as offline:
                await hub.core.invoke_method("dev1", "reboot", None, 5)
            assert offline.value.status == 404
            dev.conn.data_received(mqtt.encode(mqtt.Subscribe(1, (("$iothub/methods/POST/#", 0),))))
            call = asyncio.ensure_future(hub.core.invoke_method("dev1", "reboot", {"delay": 1}, 5))
            await asyncio.sleep(0.01)
            requests = [p for p in dev.transport.packets() if isinstance(p, mqtt.Publish)]
            assert requests[0].topic.startswith("$iothub/methods/POST/reboot/?$rid=")
            assert requests[0].qos == 0 and json.loads(requests[0].payload) == {"delay": 1}
            rid = requests[0].topic.split("$rid=")[1]
            dev.conn.data_received(
                mqtt.encode(mqtt.Publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"ok":1}'))
            )
            assert await call == (201, {"ok": 1})
            with pytest.raises(RequestRefused) as late:
                await hub.core.invoke_method("dev1", "reboot", None, 1)
            assert late.value.status == 504

        hub.loop.run_until_complete(scenario())
    finally:
        hub.close()


def test_a_new_connection_of_the_same_device_closes_the_old_one(memhub: MemoryHub) -> None:
    first = memhub.device("dev1")
    second = memhub.device("dev1")
    assert first.transport.closed and not second.transport.closed
    first.lost()  # the old connection going away must not unregister the new one
    assert memhub.core.links["dev1"] is second.conn


def test_a_will_becomes_telemetry_when_the_connection_drops(memhub: MemoryHub) -> None:
    memhub.add_device("dev1")
    dev = memhub.device("dev1", connect=False)
    token = __import__("infra.hub._auth", fromlist=["x"]).make_sas_token(
        "unit-hub.local/devices/dev1", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", 4_000_000_000
    )
    will = mqtt.Will("devices/dev1/messages/events/", b"gone", 1, False)
    connect = mqtt.Connect(
        "dev1", 60, False, "unit-hub.local/dev1/?api-version=x", token.encode(), will
    )
    assert dev.send(connect) == [mqtt.ConnAck(False, 0)]
    dev.lost()
    [event] = FeedConsumer(memhub.core.feed).receive()
    assert event.body == b"gone" and event.properties == {"iothub-MessageType": "Will"}


def test_keepalive_and_connect_timeouts_close_silent_connections(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    idle = memhub.device("dev2", connect=False)
    memhub.now += 60 * 1.5 + 1
    memhub.table.sweep()
    assert dev.transport.closed and idle.transport.closed


def test_a_disabled_device_is_refused(memhub: MemoryHub) -> None:
    memhub.add_device("dev1", status="disabled")
    dev = memhub.device("dev1", connect=False)
    assert dev.connect() == [mqtt.ConnAck(False, 5)]
    assert dev.transport.closed


def test_telemetry_storage_failure_closes_without_acknowledging(memhub: MemoryHub) -> None:
    dev = memhub.device("dev1")
    memhub.core.feed.close()
    assert dev.send(mqtt.Publish("devices/dev1/messages/events/", b"x", 1, packet_id=1)) == []
    assert dev.transport.closed
