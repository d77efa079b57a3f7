"""MQTT 3.1.1 packet codec: bytes to packets and packets to bytes, nothing else.

Pure: no I/O, no clock, standard library only. Both directions are implemented so that the hub,
the test clients and the load generator share one codec, and a round-trip property test covers it.

Invariants:
- `PacketDecoder.feed` either returns whole, validated packets or raises `MalformedPacket`; after
  raising, the decoder is poisoned (the connection must be closed: MQTT has no resynchronisation).
- A packet whose remaining length exceeds `max_packet_size` is refused from its fixed header,
  before its body is buffered, so a peer cannot make the decoder hold more than that.
- Every string field is valid UTF-8 without U+0000 (MQTT-1.5.3), fixed-header flags are the ones
  the specification mandates (MQTT-2.2.2), QoS 3 is refused, packet identifiers are non-zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "ConnAck",
    "Connect",
    "Disconnect",
    "MalformedPacket",
    "Packet",
    "PacketDecoder",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "encode",
]

_U16 = struct.Struct("!H")


class MalformedPacket(ValueError):
    """The bytes are not a valid MQTT 3.1.1 packet; the connection must be closed."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    keepalive: int
    clean_session: bool
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    protocol_name: str = "MQTT"
    protocol_level: int = 4


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    topics: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
)

# Packet type -> the fixed-header flags MQTT-2.2.2 requires (PUBLISH, type 3, carries its own).
_REQUIRED_FLAGS = {
    1: 0,
    2: 0,
    4: 0,
    5: 0,
    6: 2,
    7: 0,
    8: 2,
    9: 0,
    10: 2,
    11: 0,
    12: 0,
    13: 0,
    14: 0,
}
_MAX_REMAINING_LENGTH = 268_435_455


class _Reader:
    """Cursor over one packet body; every read checks bounds."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self) -> int:
        if self._pos >= len(self._data):
            raise MalformedPacket("packet ends inside a byte field")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u16(self) -> int:
        if self._pos + 2 > len(self._data):
            raise MalformedPacket("packet ends inside a two-byte field")
        (value,) = _U16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(value)

    def binary(self) -> bytes:
        length = self.u16()
        if self._pos + length > len(self._data):
            raise MalformedPacket("length-prefixed field runs past the end of the packet")
        value = self._data[self._pos : self._pos + length]
        self._pos += length
        return value

    def string(self) -> str:
        return _decode_utf8(self.binary())

    def rest(self) -> bytes:
        value = self._data[self._pos :]
        self._pos = len(self._data)
        return value

    def packet_id(self) -> int:
        value = self.u16()
        if value == 0:
            raise MalformedPacket("packet identifier 0 is not allowed")
        return value

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MalformedPacket("trailing bytes after the packet body")


def _decode_utf8(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string field is not valid UTF-8") from exc
    if "\x00" in text:
        raise MalformedPacket("string field contains U+0000")
    return text


def _decode_connect(body: _Reader) -> Connect:
    protocol_name = body.string()
    protocol_level = body.u8()
    flags = body.u8()
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set")
    keepalive = body.u16()
    client_id = body.string()
    will_flag, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    has_username, has_password = bool(flags & 0x80), bool(flags & 0x40)
    will: Will | None = None
    if will_flag:
        if will_qos == 3:
            raise MalformedPacket("CONNECT will QoS 3")
        will = Will(body.string(), body.binary(), will_qos, will_retain)
    elif will_qos or will_retain:
        raise MalformedPacket("CONNECT will QoS or retain without the will flag")
    if has_password and not has_username:
        raise MalformedPacket("CONNECT password without user name")
    username = body.string() if has_username else None
    password = body.binary() if has_password else None
    body.end()
    return Connect(
        client_id=client_id,
        keepalive=keepalive,
        clean_session=bool(flags & 0x02),
        username=username,
        password=password,
        will=will,
        protocol_name=protocol_name,
        protocol_level=protocol_level,
    )


def _decode_publish(flags: int, body: _Reader) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("PUBLISH with DUP set at QoS 0")
    topic = body.string()
    if not topic:
        raise MalformedPacket("PUBLISH with an empty topic name")
    if "+" in topic or "#" in topic:
        raise MalformedPacket("PUBLISH topic contains a wildcard")
    packet_id = body.packet_id() if qos else None
    return Publish(topic, body.rest(), qos, bool(flags & 0x01), dup, packet_id)


def _decode_subscribe(body: _Reader) -> Subscribe:
    packet_id = body.packet_id()
    topics: list[tuple[str, int]] = []
    while body.remaining():
        topic = body.string()
        if not topic:
            raise MalformedPacket("SUBSCRIBE with an empty topic filter")
        options = body.u8()
        if options & 0xFC or options == 3:
            raise MalformedPacket("SUBSCRIBE requested QoS byte is invalid")
        topics.append((topic, options))
    if not topics:
        raise MalformedPacket("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(topics))


def _decode_unsubscribe(body: _Reader) -> Unsubscribe:
    packet_id = body.packet_id()
    topics: list[str] = []
    while body.remaining():
        topics.append(body.string())
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(topics))


def _decode_suback(body: _Reader) -> SubAck:
    packet_id = body.packet_id()
    codes = tuple(body.rest())
    if not codes or any(code not in (0, 1, 2, 0x80) for code in codes):
        raise MalformedPacket("SUBACK return codes are invalid")
    return SubAck(packet_id, codes)


def _decode_connack(body: _Reader) -> ConnAck:
    ack_flags = body.u8()
    if ack_flags & 0xFE:
        raise MalformedPacket("CONNACK reserved flags are set")
    code = body.u8()
    body.end()
    return ConnAck(bool(ack_flags & 1), code)


def _decode_id_only(kind: int, body: _Reader) -> Packet:
    packet_id = body.packet_id()
    body.end()
    cls: type[PubAck | PubRec | PubRel | PubComp | UnsubAck] = _ID_ONLY[kind]
    return cls(packet_id)


def _decode_empty(kind: int, body: _Reader) -> Packet:
    body.end()
    cls: type[PingReq | PingResp | Disconnect] = _EMPTY[kind]
    return cls()


_ID_ONLY: dict[int, type[PubAck | PubRec | PubRel | PubComp | UnsubAck]] = {
    4: PubAck,
    5: PubRec,
    6: PubRel,
    7: PubComp,
    11: UnsubAck,
}
_EMPTY: dict[int, type[PingReq | PingResp | Disconnect]] = {
    12: PingReq,
    13: PingResp,
    14: Disconnect,
}


def decode_packet(first_byte: int, body_bytes: bytes) -> Packet:
    """Decode one packet from its first header byte and its body (the remaining-length bytes)."""
    kind, flags = first_byte >> 4, first_byte & 0x0F
    if kind == 3:
        return _decode_publish(flags, _Reader(body_bytes))
    if kind not in _REQUIRED_FLAGS:
        raise MalformedPacket(f"packet type {kind} is reserved")
    if flags != _REQUIRED_FLAGS[kind]:
        raise MalformedPacket(f"packet type {kind} has invalid fixed-header flags {flags:#x}")
    body = _Reader(body_bytes)
    if kind == 1:
        return _decode_connect(body)
    if kind == 2:
        return _decode_connack(body)
    if kind == 8:
        return _decode_subscribe(body)
    if kind == 9:
        return _decode_suback(body)
    if kind == 10:
        return _decode_unsubscribe(body)
    if kind in (4, 5, 6, 7, 11):
        return _decode_id_only(kind, body)
    return _decode_empty(kind, body)


class PacketDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole packets back."""

    __slots__ = ("_buffer", "_max_packet_size", "_poisoned")

    def __init__(self, max_packet_size: int = _MAX_REMAINING_LENGTH) -> None:
        self._buffer = bytearray()
        self._max_packet_size = max_packet_size
        self._poisoned = False

    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        if self._poisoned:
            raise MalformedPacket("decoder already failed; the connection must be closed")
        self._buffer += data
        packets: list[Packet] = []
        try:
            while True:
                packet = self._next()
                if packet is None:
                    return packets
                packets.append(packet)
        except MalformedPacket:
            self._poisoned = True
            raise

    def _next(self) -> Packet | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        length, multiplier, pos = 0, 1, 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            length += (byte & 0x7F) * multiplier
            pos += 1
            if not byte & 0x80:
                break
            multiplier *= 128
            if pos > 4:
                raise MalformedPacket("remaining length uses more than four bytes")
        if length > self._max_packet_size:
            raise MalformedPacket(f"packet of {length} bytes exceeds {self._max_packet_size}")
        if len(buf) < pos + length:
            return None
        first, body = buf[0], bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return decode_packet(first, body)


def _remaining_length(length: int) -> bytes:
    if length > _MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {length} bytes is too large for MQTT")
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def _string(text: str) -> bytes:
    return _binary(text.encode("utf-8"))


def _binary(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("length-prefixed field longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _frame(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + _remaining_length(len(body)) + body


def _encode_connect(p: Connect) -> bytes:
    flags = 0x02 if p.clean_session else 0
    payload = _string(p.client_id)
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        payload += _string(p.will.topic) + _binary(p.will.payload)
    if p.username is not None:
        flags |= 0x80
        payload += _string(p.username)
    if p.password is not None:
        flags |= 0x40
        payload += _binary(p.password)
    header = _string(p.protocol_name) + bytes((p.protocol_level, flags)) + _U16.pack(p.keepalive)
    return _frame(0x10, header + payload)


def _encode_publish(p: Publish) -> bytes:
    flags = (p.qos << 1) | (0x08 if p.dup else 0) | (0x01 if p.retain else 0)
    body = _string(p.topic)
    if p.qos:
        if not p.packet_id:
            raise ValueError("PUBLISH at QoS 1 or 2 needs a packet identifier")
        body += _U16.pack(p.packet_id)
    return _frame(0x30 | flags, body + p.payload)


def encode(packet: Packet) -> bytes:
    """Serialise one packet to its wire bytes."""
    match packet:
        case Publish():
            return _encode_publish(packet)
        case PubAck(packet_id=pid):
            return b"\x40\x02" + _U16.pack(pid)
        case Connect():
            return _encode_connect(packet)
        case ConnAck(session_present=present, return_code=code):
            return bytes((0x20, 2, 1 if present else 0, code))
        case PubRec(packet_id=pid):
            return b"\x50\x02" + _U16.pack(pid)
        case PubRel(packet_id=pid):
            return b"\x62\x02" + _U16.pack(pid)
        case PubComp(packet_id=pid):
            return b"\x70\x02" + _U16.pack(pid)
        case Subscribe(packet_id=pid, topics=topics):
            body = b"".join(_string(topic) + bytes((qos,)) for topic, qos in topics)
            return _frame(0x82, _U16.pack(pid) + body)
        case SubAck(packet_id=pid, return_codes=codes):
            return _frame(0x90, _U16.pack(pid) + bytes(codes))
        case Unsubscribe(packet_id=pid, topics=filters):
            return _frame(0xA2, _U16.pack(pid) + b"".join(_string(t) for t in filters))
        case UnsubAck(packet_id=pid):
            return b"\xb0\x02" + _U16.pack(pid)
        case PingReq():
            return b"\xc0\x00"
        case PingResp():
            return b"\xd0\x00"
        case Disconnect():
            return b"\xe0\x00"
    raise TypeError(f"not an MQTT packet: {packet!r}")
