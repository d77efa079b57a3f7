"""paho-mqtt 2.x devices over TLS, SAS and X.509, against a hub on free ports."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from infra.hub import (
    BackgroundHub,
    FeedConsumer,
    RequestRefused,
    TelemetryFeed,
    provision_device,
    provision_devices,
)
from tests.integration.hub.conftest import HOSTNAME, Device, rest

ALL = (
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
    "$iothub/methods/POST/#",
)


def _feed(hub: BackgroundHub) -> FeedConsumer:
    return FeedConsumer(TelemetryFeed.open(hub.server.config.feed_path), "tests")


def test_sas_device_telemetry_reaches_the_feed_in_order(hub: BackgroundHub, devices: Any) -> None:
    dev = devices("dev1")
    for n in range(20):
        dev.publish(
            f"devices/dev1/messages/events/%24.mid=m{n}&%24.ct=application%2Fjson&n={n}",
            json.dumps({"n": n}),
        )
    events = _feed(hub).receive(100)
    assert [e.body_as_json()["n"] for e in events] == list(range(20))
    assert [e.sequence_number for e in events] == list(range(20))
    assert events[3].properties == {"n": "3"} and events[3].system_properties["message-id"] == "m3"


def test_x509_device_with_its_registered_certificate(hub: BackgroundHub) -> None:
    provisioned = provision_device(hub.server.config, "cam1", x509=True)
    dev = Device(hub.server, "cam1").tls(provisioned.cert_path, provisioned.key_path).connect()
    try:
        dev.publish("devices/cam1/messages/events/", b"frame")
        [event] = _feed(hub).receive(10)
        assert event.device_id == "cam1" and event.body == b"frame"
    finally:
        dev.close()


def test_x509_certificate_of_another_device_is_refused(hub: BackgroundHub) -> None:
    provision_device(hub.server.config, "cam1", x509=True)
    other = provision_device(hub.server.config, "cam2", x509=True)
    dev = Device(hub.server, "cam1").tls(other.cert_path, other.key_path)
    dev.connect(expect=5)
    dev.close()


def test_bad_and_expired_sas_tokens_get_connack_5(hub: BackgroundHub, devices: Any) -> None:
    good = provision_device(hub.server.config, "dev1").primary_key
    assert good is not None
    wrong = Device(hub.server, "dev1").tls().sas("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    wrong.connect(expect=5)
    wrong.close()
    expired = Device(hub.server, "dev1").tls().sas(good, ttl=-10)
    expired.connect(expect=5)
    expired.close()


def test_twin_get_reported_patch_and_desired_notification(hub: BackgroundHub, devices: Any) -> None:
    dev = devices("dev1")
    dev.subscribe(*ALL)
    dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b'{"fw": "1.0"}')
    assert dev.expect("$iothub/twin/res/").topic == "$iothub/twin/res/204/?$rid=1&$version=2"
    patch = {"properties": {"desired": {"interval": 5}}}
    assert (
        rest(hub, "PATCH", "/twins/dev1", json=patch, headers={"If-Match": '"*"'}).status_code
        == 200
    )
    note = dev.expect("$iothub/twin/PATCH/properties/desired/")
    assert json.loads(note.payload) == {"interval": 5, "$version": 2}
    dev.publish("$iothub/twin/GET/?$rid=2", b" ")
    twin = json.loads(dev.expect("$iothub/twin/res/200/?$rid=2").payload)
    assert twin == {
        "desired": {"interval": 5, "$version": 2},
        "reported": {"fw": "1.0", "$version": 2},
    }


def test_c2d_is_delivered_at_qos1_and_kept_across_reconnects(
    hub: BackgroundHub, devices: Any
) -> None:
    dev = devices("dev1")
    dev.subscribe("devices/dev1/messages/devicebound/#")
    dev.close()
    sent = rest(
        hub,
        "POST",
        "/devices/dev1/messages/deviceBound",
        content=b"update now",
        headers={"iothub-app-kind": "ota"},
    )
    assert sent.status_code == 200
    again = devices("dev1")  # clean session 0: the subscription is still there
    message = again.expect("devices/dev1/messages/devicebound/")
    assert message.qos == 1 and message.payload == b"update now" and "kind=ota" in message.topic
    assert hub.wait_until(lambda: hub.core.store.count_c2d("dev1") == 0)


def test_direct_method_round_trip_and_404_when_not_subscribed(
    hub: BackgroundHub, devices: Any
) -> None:
    dev = devices("dev1")
    body = {"methodName": "reboot", "payload": {"in": 1}, "responseTimeoutInSeconds": 10}
    assert rest(hub, "POST", "/twins/dev1/methods", json=body).status_code == 404
    dev.subscribe("$iothub/methods/POST/#")

    def answer() -> None:
        request = dev.expect("$iothub/methods/POST/reboot/")
        rid = request.topic.split("$rid=")[1]
        dev.publish(
            f"$iothub/methods/res/200/?$rid={rid}",
            json.dumps({"echo": json.loads(request.payload)}),
        )

    responder = threading.Thread(target=answer)
    responder.start()
    reply = rest(hub, "POST", "/twins/dev1/methods", json=body)
    responder.join(10)
    assert reply.status_code == 200 and reply.json() == {
        "status": 200,
        "payload": {"echo": {"in": 1}},
    }


def test_two_devices_cannot_read_or_write_each_others_traffic(
    hub: BackgroundHub, devices: Any
) -> None:
    alice, bob = devices("alice"), devices("bob")
    alice.subscribe(*ALL, "devices/alice/messages/devicebound/#")
    bob.subscribe(*ALL, "devices/bob/messages/devicebound/#")
    # Each reads its own twin and gets only its own.
    rest(hub, "PATCH", "/twins/alice", json={"properties": {"desired": {"secret": "a"}}})
    rest(hub, "POST", "/devices/alice/messages/deviceBound", content=b"for alice")
    alice.expect("$iothub/twin/PATCH/properties/desired/")
    alice.expect("devices/alice/messages/devicebound/")
    bob.publish("$iothub/twin/GET/?$rid=b", b"")
    assert "secret" not in bob.expect("$iothub/twin/res/200").payload.decode()
    assert bob.nothing_within(0.3) == []
    # Bob tries to subscribe to Alice's C2D, then to publish as Alice: the hub hangs up on him.
    bob.client.subscribe("devices/alice/messages/devicebound/#", 1)
    assert bob.disconnected.wait(5)
    mallory = devices("bob")
    mallory.client.publish("devices/alice/messages/events/", b"forged", qos=1)
    assert mallory.disconnected.wait(5)
    alice.publish("devices/alice/messages/events/", b"genuine")
    events = _feed(hub).receive(100)
    assert [(e.device_id, e.body) for e in events] == [("alice", b"genuine")]
    assert alice.nothing_within(0.3) == [] and not alice.disconnected.is_set()


def test_a_second_connection_of_a_device_closes_the_first(hub: BackgroundHub, devices: Any) -> None:
    first = devices("dev1")
    second = devices("dev1")
    assert first.disconnected.wait(5)
    second.publish("devices/dev1/messages/events/", b"from the new connection")
    assert not second.disconnected.is_set()


def test_qos2_publish_closes_the_connection(hub: BackgroundHub, devices: Any) -> None:
    dev = devices("dev1")
    dev.client.publish("devices/dev1/messages/events/", b"x", qos=2)
    assert dev.disconnected.wait(5)
    time.sleep(0.1)
    assert hub.call(lambda: "dev1" not in hub.core.links)


def test_the_username_must_name_this_hub(hub: BackgroundHub) -> None:
    key = provision_device(hub.server.config, "dev1").primary_key
    assert key is not None
    dev = Device(hub.server, "dev1").tls().sas(key)
    token = dev.client._password
    dev.client.username_pw_set("other-hub.local/dev1/?api-version=2021-04-12", token)
    dev.connect(expect=5)
    dev.close()
    assert HOSTNAME != "other-hub.local"


def test_devices_provisioned_in_bulk_carry_their_tags_and_connect(hub: BackgroundHub) -> None:
    wanted = [(f"bulk-{n}", {"group": "canary" if n % 10 == 0 else "main"}) for n in range(300)]
    made = provision_devices(hub.server.config, wanted)
    assert [m.device_id for m in made] == [d for d, _ in wanted]
    hub.call(hub.core.store.refresh_devices)
    twins = hub.call(lambda: dict(hub.core.store.twins))
    assert {d: twins[d].tags for d, _ in wanted} == dict(wanted)
    key = made[123].primary_key
    assert key is not None
    Device(hub.server, "bulk-123").tls().sas(key).connect().close()


def test_bulk_provisioning_refuses_a_taken_or_repeated_id_and_writes_nothing(
    hub: BackgroundHub,
) -> None:
    provision_device(hub.server.config, "taken")
    for devices, status in (
        ([("new-1", {}), ("taken", {})], 409),
        ([("new-1", {}), ("new-1", {})], 400),
        ([("new-1", {}), ("bad id/", {})], 400),
    ):
        with pytest.raises(RequestRefused) as refused:
            provision_devices(hub.server.config, devices)
        assert refused.value.status == status
    hub.call(hub.core.store.refresh_devices)
    assert hub.call(lambda: "new-1" in hub.core.store.devices) is False
