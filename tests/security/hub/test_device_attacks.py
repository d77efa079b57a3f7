"""One device attacks the hub or another device; each row is one attack.

Every attack ends with the attacker's connection closed or refused, and the victim's twin,
C2D queue, methods and telemetry untouched: `$iothub/...` traffic never crosses identities.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.hub import _codec as mqtt
from infra.hub._feed import FeedConsumer
from tests.unit.hub.memory_hub import HOST, MemoryDevice, MemoryHub

VICTIM_TOPICS = (
    ("$iothub/twin/res/#", 1),
    ("$iothub/twin/PATCH/properties/desired/#", 1),
    ("$iothub/methods/POST/#", 1),
    ("devices/victim/messages/devicebound/#", 1),
)

CLOSES = [
    ("subscribe-victim-c2d", mqtt.Subscribe(1, (("devices/victim/messages/devicebound/#", 1),))),
    ("subscribe-everything", mqtt.Subscribe(1, (("#", 1),))),
    ("subscribe-all-iothub", mqtt.Subscribe(1, (("$iothub/#", 1),))),
    ("subscribe-wildcard-device", mqtt.Subscribe(1, (("devices/+/messages/devicebound/#", 1),))),
    (
        "publish-as-victim",
        mqtt.Publish("devices/victim/messages/events/", b"forged", 1, packet_id=1),
    ),
    (
        "publish-c2d-to-victim",
        mqtt.Publish("devices/victim/messages/devicebound/", b"x", 1, packet_id=1),
    ),
    (
        "publish-desired-patch",
        mqtt.Publish("$iothub/twin/PATCH/properties/desired/?$version=9", b"{}"),
    ),
    ("publish-method-request", mqtt.Publish("$iothub/methods/POST/reboot/?$rid=1", b"{}")),
    ("publish-qos2", mqtt.Publish("devices/attacker/messages/events/", b"x", 2, packet_id=1)),
    ("publish-unknown-topic", mqtt.Publish("anything/else", b"x")),
    (
        "second-connect",
        mqtt.Connect("attacker", 60, False, f"{HOST}/attacker/?api-version=1", b"x"),
    ),
    ("pubrel-without-qos2", mqtt.PubRel(1)),
    (
        "oversized-telemetry",
        mqtt.Publish("devices/attacker/messages/events/", b"x" * (256 * 1024 + 1), 1, packet_id=1),
    ),
]


def _victim(hub: MemoryHub) -> MemoryDevice:
    victim = hub.device("victim")
    victim.send(mqtt.Subscribe(1, VICTIM_TOPICS))
    return victim


def _victim_untouched(hub: MemoryHub, victim: MemoryDevice) -> None:
    assert not victim.transport.closed
    assert victim.received() == []
    twin = hub.core.store.twins["victim"]
    assert (twin.version, twin.reported, twin.desired) == (1, {}, {})
    assert all(
        e.device_id != "victim" for e in FeedConsumer(hub.core.feed, "audit").receive(10_000)
    )
    [ack] = victim.send(
        mqtt.Publish("devices/victim/messages/events/", b"still fine", 1, packet_id=77)
    )
    assert ack == mqtt.PubAck(77)


@pytest.mark.parametrize("packet", [p for _, p in CLOSES], ids=[n for n, _ in CLOSES])
def test_attack_closes_the_attacker_and_spares_the_victim(
    memhub: MemoryHub, packet: mqtt.Packet
) -> None:
    victim = _victim(memhub)
    attacker = memhub.device("attacker")
    attacker.send(packet)
    assert attacker.transport.closed
    _victim_untouched(memhub, victim)


def test_a_method_response_with_the_victims_request_id_is_ignored(memhub: MemoryHub) -> None:
    victim = _victim(memhub)
    attacker = memhub.device("attacker")
    attacker.send(mqtt.Subscribe(1, (("$iothub/methods/POST/#", 0),)))

    async def scenario() -> tuple[int, object]:
        import asyncio

        call = asyncio.ensure_future(memhub.core.invoke_method("victim", "open", None, 5))
        await asyncio.sleep(0.01)
        [request] = [p for p in victim.transport.packets() if isinstance(p, mqtt.Publish)]
        rid = request.topic.split("$rid=")[1]
        attacker.conn.data_received(
            mqtt.encode(mqtt.Publish(f"$iothub/methods/res/200/?$rid={rid}", b'"forged"'))
        )
        await asyncio.sleep(0.01)
        assert not call.done()
        victim.conn.data_received(
            mqtt.encode(mqtt.Publish(f"$iothub/methods/res/200/?$rid={rid}", b'"real"'))
        )
        return await call

    assert memhub.loop.run_until_complete(scenario()) == (200, "real")
    assert attacker.received() == []


def test_twin_traffic_goes_only_to_its_owner(memhub: MemoryHub) -> None:
    victim = _victim(memhub)
    attacker = memhub.device("attacker")
    attacker.send(mqtt.Subscribe(1, VICTIM_TOPICS[:3]))
    memhub.core.update_twin(
        "victim", {"properties": {"desired": {"secret": 1}}}, None, replace_all=False
    )
    [attacker_view] = attacker.send(mqtt.Publish("$iothub/twin/GET/?$rid=1", b""))
    assert json.loads(attacker_view.payload)["desired"] == {"$version": 1}
    [note] = victim.received()
    assert json.loads(note.payload) == {"secret": 1, "$version": 2}


REFUSED_CONNECTS = [
    ("victim-username-attacker-token", "victim", "attacker", "attacker"),
    ("attacker-username-victim-client-id", "attacker", "victim", "attacker"),
    ("token-scoped-to-victim", "attacker", "attacker", "victim"),
]


@pytest.mark.parametrize(
    ("username_id", "client_id", "token_id"),
    [r[1:] for r in REFUSED_CONNECTS],
    ids=[r[0] for r in REFUSED_CONNECTS],
)
def test_identity_confusion_is_refused_with_connack_5(
    memhub: MemoryHub, username_id: str, client_id: str, token_id: str
) -> None:
    from infra.hub._auth import make_sas_token

    victim = _victim(memhub)
    memhub.add_device("attacker")
    attacker = MemoryDevice(memhub, "attacker")
    token = make_sas_token(
        f"{HOST}/devices/{token_id}", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", 4_000_000_000
    )
    connect = mqtt.Connect(
        client_id, 60, False, f"{HOST}/{username_id}/?api-version=x", token.encode()
    )
    assert attacker.send(connect) == [mqtt.ConnAck(False, 5)]
    assert memhub.core.links["victim"] is victim.conn
    _victim_untouched(memhub, victim)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6))
def test_random_bytes_after_connect_never_crash_or_touch_the_victim(
    tmp_path: Path, chunks: list[bytes]
) -> None:
    hub = MemoryHub(tmp_path)
    try:
        victim = _victim(hub)
        attacker = hub.device("attacker")
        for chunk in chunks:
            attacker.send_bytes(chunk)
        _victim_untouched(hub, victim)
    finally:
        hub.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from([p for _, p in CLOSES[:10]]), st.data())
def test_mutated_packets_never_crash_or_touch_the_victim(
    tmp_path: Path, packet: mqtt.Packet, data: st.DataObject
) -> None:
    hub = MemoryHub(tmp_path)
    try:
        victim = _victim(hub)
        attacker = hub.device("attacker")
        wire = bytearray(mqtt.encode(packet))
        for _ in range(data.draw(st.integers(1, 3))):
            wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
        attacker.send_bytes(bytes(wire))
        _victim_untouched(hub, victim)
    finally:
        hub.close()


def test_a_connection_flood_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    from infra.hub import HubLimits

    hub = MemoryHub(tmp_path, HubLimits(max_connections=3))
    try:
        victim = _victim(hub)
        extra = [MemoryDevice(hub, f"x{i}") for i in range(4)]
        assert [d.transport.closed for d in extra] == [False, False, True, True]
        _victim_untouched(hub, victim)
    finally:
        hub.close()
