"""The MQTT codec: round trips, the specification's refusals, and fuzzing with random bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.hub import _codec as mqtt

texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
topics = texts.filter(lambda t: t and "+" not in t and "#" not in t)
packet_ids = st.integers(1, 65535)


@st.composite
def publishes(draw: st.DrawFn) -> mqtt.Publish:
    qos = draw(st.integers(0, 2))
    return mqtt.Publish(
        draw(topics),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(packet_ids) if qos else None,
    )


@st.composite
def connects(draw: st.DrawFn) -> mqtt.Connect:
    username = draw(st.none() | texts)
    will = draw(
        st.none()
        | st.builds(mqtt.Will, topics, st.binary(max_size=50), st.integers(0, 2), st.booleans())
    )
    return mqtt.Connect(
        client_id=draw(texts),
        keepalive=draw(st.integers(0, 65535)),
        clean_session=draw(st.booleans()),
        username=username,
        password=draw(st.none() | st.binary(max_size=200)) if username is not None else None,
        will=will,
    )


packets = st.one_of(
    publishes(),
    connects(),
    st.builds(mqtt.ConnAck, st.booleans(), st.integers(0, 5)),
    st.builds(mqtt.PubAck, packet_ids),
    st.builds(mqtt.PubRec, packet_ids),
    st.builds(mqtt.PubRel, packet_ids),
    st.builds(mqtt.PubComp, packet_ids),
    st.builds(
        mqtt.Subscribe,
        packet_ids,
        st.lists(st.tuples(topics, st.integers(0, 2)), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(
        mqtt.SubAck,
        packet_ids,
        st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(mqtt.Unsubscribe, packet_ids, st.lists(topics, min_size=1, max_size=4).map(tuple)),
    st.builds(mqtt.UnsubAck, packet_ids),
    st.just(mqtt.PingReq()),
    st.just(mqtt.PingResp()),
    st.just(mqtt.Disconnect()),
)


@given(st.lists(packets, min_size=1, max_size=5), st.integers(1, 50))
def test_any_packet_sequence_round_trips_whatever_the_chunking(
    batch: list[mqtt.Packet], chunk: int
) -> None:
    wire = b"".join(mqtt.encode(p) for p in batch)
    decoder = mqtt.PacketDecoder()
    decoded: list[mqtt.Packet] = []
    for start in range(0, len(wire), chunk):
        decoded.extend(decoder.feed(wire[start : start + chunk]))
    assert decoded == batch
    assert decoder.buffered() == 0


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_give_packets_or_malformed_never_another_error(data: bytes) -> None:
    decoder = mqtt.PacketDecoder(max_packet_size=1024)
    try:
        for packet in decoder.feed(data):
            mqtt.encode(packet)  # whatever decodes must be encodable again
    except mqtt.MalformedPacket:
        with pytest.raises(mqtt.MalformedPacket):
            decoder.feed(b"\xc0\x00")  # poisoned: the connection must be closed


@settings(max_examples=400)
@given(packets, st.data())
def test_mutated_packets_never_crash_the_decoder(packet: mqtt.Packet, data: st.DataObject) -> None:
    wire = bytearray(mqtt.encode(packet))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(wire) - 1))
        wire[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(mqtt.MalformedPacket):
        mqtt.PacketDecoder(max_packet_size=4096).feed(bytes(wire))


REFUSALS = [
    ("reserved-type-0", b"\x00\x00"),
    ("reserved-type-15", b"\xf0\x00"),
    ("subscribe-bad-flags", b"\x80\x06\x00\x01\x00\x01a\x00"),
    ("pubrel-bad-flags", b"\x60\x02\x00\x01"),
    ("publish-qos-3", b"\x36\x05\x00\x01a\x00\x01"),
    ("publish-dup-at-qos0", b"\x38\x03\x00\x01a"),
    ("publish-wildcard-topic", b"\x30\x03\x00\x01#"),
    ("publish-empty-topic", b"\x30\x02\x00\x00"),
    ("publish-invalid-utf8-topic", b"\x30\x04\x00\x02\xc3\x28"),
    ("publish-nul-in-topic", b"\x30\x03\x00\x01\x00"),
    ("packet-id-zero", b"\x40\x02\x00\x00"),
    ("remaining-length-five-bytes", b"\x30\xff\xff\xff\xff\x01"),
    ("string-past-end", b"\x30\x03\x00\x09a"),
    ("connect-reserved-flag", b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00"),
    ("connect-password-without-user", b"\x10\x0e\x00\x04MQTT\x04\x40\x00\x3c\x00\x00\x00\x00"),
    ("connect-will-qos-without-flag", b"\x10\x0c\x00\x04MQTT\x04\x08\x00\x3c\x00\x00"),
    ("subscribe-no-topics", b"\x82\x02\x00\x01"),
    ("subscribe-qos-3", b"\x82\x06\x00\x01\x00\x01a\x03"),
    ("pingreq-with-body", b"\xc0\x01\x00"),
    ("puback-trailing-bytes", b"\x40\x03\x00\x01\x00"),
]


@pytest.mark.parametrize("wire", [w for _, w in REFUSALS], ids=[n for n, _ in REFUSALS])
def test_specification_violations_are_malformed(wire: bytes) -> None:
    with pytest.raises(mqtt.MalformedPacket):
        mqtt.PacketDecoder().feed(wire)


def test_an_oversized_packet_is_refused_from_its_header_alone() -> None:
    decoder = mqtt.PacketDecoder(max_packet_size=1000)
    header = b"\x30" + bytes([0x80 | (2000 % 128), 2000 // 128])
    with pytest.raises(mqtt.MalformedPacket, match="exceeds"):
        decoder.feed(header)


def test_a_partial_packet_waits_for_the_rest() -> None:
    wire = mqtt.encode(mqtt.Publish("devices/d/messages/events/", b"x" * 300, 1, packet_id=7))
    decoder = mqtt.PacketDecoder()
    assert decoder.feed(wire[:100]) == []
    assert decoder.feed(wire[100:]) == [
        mqtt.Publish("devices/d/messages/events/", b"x" * 300, 1, packet_id=7)
    ]


def test_connect_fields_as_the_azure_sdk_sends_them() -> None:
    connect = mqtt.Connect(
        client_id="dev1",
        keepalive=60,
        clean_session=False,
        username="hub.local/dev1/?api-version=2021-04-12",
        password=b"SharedAccessSignature sr=x&sig=y&se=1",
    )
    wire = mqtt.encode(connect)
    assert wire[9] == 0xC0  # user name + password, clean session 0 (reference §1.1)
    assert mqtt.PacketDecoder().feed(wire) == [connect]
