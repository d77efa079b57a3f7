"""Message bodies to bytes and back. One encoder and one decoder per message type.

Invariants:
 * `decode_message(t, encode_message(m)[1]) == m` for every valid message `m` of type `t`.
 * `decode_message` raises only `DecodeError`, whatever the bytes: unknown types, short or
   long payloads, bad enum values and non-UTF-8 text are all refused.
 * Fields added by a later protocol version are optional trailing fields: a payload without
   them is the earlier version's layout and decodes with the field absent (None), and a
   message whose new field is None encodes to exactly the earlier layout.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TypeVar

from firmware.icc._codec import Reader, Writer
from firmware.icc._errors import DecodeError, LocalProtocolError
from firmware.icc._messages import (
    Abort,
    Ack,
    Activate,
    Begin,
    Caps,
    Confirm,
    Data,
    End,
    Heartbeat,
    Hello,
    Inference,
    Log,
    LogLevel,
    Message,
    MessageType,
    Nack,
    Revert,
    SelfTest,
    SlotInfo,
    Status,
    TensorSpec,
    Vector,
    VectorPart,
    Window,
)
from firmware.icc._reasons import CoreState, ReasonCode, SlotState

__all__ = ["decode_message", "encode_message", "message_type"]

_E = TypeVar("_E", bound=IntEnum)
_SHA256_BYTES = 32
_DTYPES = ("int8", "uint8", "int16", "int32", "float32")


def _enum(kind: type[_E], value: int) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise DecodeError(f"{value} is not a valid {kind.__name__}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def _join(names: tuple[str, ...]) -> str:
    if any("," in name for name in names):
        raise LocalProtocolError("operator names may not contain commas")
    return ",".join(names)


def _write_tensor(w: Writer, spec: TensorSpec) -> None:
    if spec.dtype not in _DTYPES:
        raise LocalProtocolError(f"unsupported tensor dtype {spec.dtype!r}")
    w.u8(_DTYPES.index(spec.dtype)).shape(spec.shape)


def _read_tensor(r: Reader) -> TensorSpec:
    code = r.u8()
    if code >= len(_DTYPES):
        raise DecodeError(f"unknown tensor dtype code {code}")
    return TensorSpec(dtype=_DTYPES[code], shape=r.shape())


def _write_slot(w: Writer, slot: SlotInfo) -> None:
    w.u8(slot.state).str8(slot.model_id).str8(slot.version).u32(slot.length)
    w.fixed(slot.sha256, _SHA256_BYTES).u32(slot.arena_bytes)


def _read_slot(r: Reader) -> SlotInfo:
    return SlotInfo(
        state=_enum(SlotState, r.u8()),
        model_id=r.str8(),
        version=r.str8(),
        length=r.u32(),
        sha256=r.take(_SHA256_BYTES),
        arena_bytes=r.u32(),
    )


def _enc_hello(m: Hello, w: Writer) -> None:
    w.u32(m.nonce).u8(m.min_version).u8(m.max_version).u16(m.max_message_bytes).u8(m.window)


def _dec_hello(r: Reader) -> Hello:
    return Hello(r.u32(), r.u8(), r.u8(), r.u16(), r.u8())


def _enc_caps(m: Caps, w: Writer) -> None:
    w.u32(m.nonce).u8(m.version).u16(m.max_message_bytes).u8(m.window)
    w.str8(m.core_id).str8(m.firmware_version).str8(m.runtime_version)
    w.u32(m.tcm_bytes).u32(m.sysram_bytes).u32(m.reserved_bytes)
    w.u8(m.state).u8(m.active_slot).u8(m.trial_slot).u8(m.last_reason)
    w.u8(len(m.slots))
    for slot in m.slots:
        _write_slot(w, slot)
    w.str16(_join(m.operators))


def _dec_caps(r: Reader) -> Caps:
    head = (r.u32(), r.u8(), r.u16(), r.u8(), r.str8(), r.str8(), r.str8())
    memory = (r.u32(), r.u32(), r.u32())
    state, active, trial = _enum(CoreState, r.u8()), r.u8(), r.u8()
    last_reason = _enum(ReasonCode, r.u8())
    slots = tuple(_read_slot(r) for _ in range(r.u8()))
    return Caps(*head, *memory, state, active, trial, last_reason, slots, _names(r.str16()))


def _enc_begin(m: Begin, w: Writer) -> None:
    w.u8(m.slot).str8(m.model_id).str8(m.version).u32(m.length).fixed(m.sha256, _SHA256_BYTES)
    w.u32(m.arena_bytes)
    _write_tensor(w, m.input)
    _write_tensor(w, m.output)
    w.str8(m.min_firmware_version).str16(_join(m.operators)).u8(m.vector_count)


def _dec_begin(r: Reader) -> Begin:
    slot, model_id, version, length = r.u8(), r.str8(), r.str8(), r.u32()
    sha, arena = r.take(_SHA256_BYTES), r.u32()
    tensors = (_read_tensor(r), _read_tensor(r))
    return Begin(
        slot, model_id, version, length, sha, arena, *tensors, r.str8(), _names(r.str16()), r.u8()
    )


def _enc_vector(m: Vector, w: Writer) -> None:
    w.u8(m.index).u8(m.part).u8(m.tolerance).u16(m.total).u16(m.offset).raw(m.data)


def _dec_vector(r: Reader) -> Vector:
    index, part, tolerance = r.u8(), _enum(VectorPart, r.u8()), r.u8()
    return Vector(index, part, tolerance, r.u16(), r.u16(), r.rest())


def _enc_selftest(m: SelfTest, w: Writer) -> None:
    w.u8(m.slot).u8(int(m.passed)).u8(m.reason).u8(m.vectors_total).u8(m.vectors_passed)
    w.u16(m.max_abs_diff).u32(m.latency_us)


def _dec_selftest(r: Reader) -> SelfTest:
    slot, passed = r.u8(), r.u8()
    if passed > 1:
        raise DecodeError(f"boolean field holds {passed}")
    return SelfTest(slot, bool(passed), _enum(ReasonCode, r.u8()), r.u8(), r.u8(), r.u16(), r.u32())


def _enc_inference(m: Inference, w: Writer) -> None:
    w.u8(m.slot).u32(m.counter).str8(m.model_id).str8(m.version).u8(m.label).f32(m.score)
    w.u32(m.latency_us).u8(m.truth)
    if m.anomaly is not None:  # version 2's trailing byte; absent for "not a detector"
        w.u8(int(m.anomaly))


def _dec_inference(r: Reader) -> Inference:
    fields = (r.u8(), r.u32(), r.str8(), r.str8(), r.u8(), r.f32(), r.u32(), r.u8())
    if r.at_end():
        return Inference(*fields)
    flag = r.u8()
    if flag > 1:
        raise DecodeError(f"anomaly flag holds {flag}, not 0 or 1")
    return Inference(*fields, anomaly=bool(flag))


def _enc_heartbeat(m: Heartbeat, w: Writer) -> None:
    w.u64(m.uptime_ms).u8(m.state).u8(m.active_slot).u32(m.inferences)


def _dec_heartbeat(r: Reader) -> Heartbeat:
    return Heartbeat(r.u64(), _enum(CoreState, r.u8()), r.u8(), r.u32())


_Decoder = Callable[[Reader], Message]

_TYPES: dict[type, MessageType] = {
    Hello: MessageType.HELLO,
    Caps: MessageType.CAPS,
    Status: MessageType.STATUS,
    Begin: MessageType.BEGIN,
    Vector: MessageType.VECTOR,
    Data: MessageType.DATA,
    End: MessageType.END,
    Abort: MessageType.ABORT,
    Activate: MessageType.ACTIVATE,
    SelfTest: MessageType.SELFTEST,
    Confirm: MessageType.CONFIRM,
    Revert: MessageType.REVERT,
    Inference: MessageType.INFERENCE,
    Log: MessageType.LOG,
    Heartbeat: MessageType.HEARTBEAT,
    Ack: MessageType.ACK,
    Nack: MessageType.NACK,
    Window: MessageType.WINDOW,
}


def _encode_body(message: Message, w: Writer) -> None:
    match message:
        case Hello():
            _enc_hello(message, w)
        case Caps():
            _enc_caps(message, w)
        case Begin():
            _enc_begin(message, w)
        case Vector():
            _enc_vector(message, w)
        case Data(offset=offset, data=data):
            w.u32(offset).raw(data)
        case Abort(reason=reason):
            w.u8(reason)
        case Activate(slot=slot, confirm_timeout_ms=timeout):
            w.u8(slot).u32(timeout)
        case SelfTest():
            _enc_selftest(message, w)
        case Confirm(slot=slot):
            w.u8(slot)
        case Revert(slot=slot, reason=reason):
            w.u8(slot).u8(reason)
        case Inference():
            _enc_inference(message, w)
        case Log(level=level, text=text):
            w.u8(level).str16(text)
        case Heartbeat():
            _enc_heartbeat(message, w)
        case Ack(ref_type=ref_type, value=value):
            w.u8(ref_type).u32(value)
        case Nack(ref_type=ref_type, reason=reason, detail=detail):
            w.u8(ref_type).u8(reason).str8(detail)
        case Status() | End() | Window():
            pass


_DECODERS: dict[MessageType, _Decoder] = {
    MessageType.HELLO: _dec_hello,
    MessageType.CAPS: _dec_caps,
    MessageType.STATUS: lambda r: Status(),
    MessageType.BEGIN: _dec_begin,
    MessageType.VECTOR: _dec_vector,
    MessageType.DATA: lambda r: Data(r.u32(), r.rest()),
    MessageType.END: lambda r: End(),
    MessageType.ABORT: lambda r: Abort(_enum(ReasonCode, r.u8())),
    MessageType.ACTIVATE: lambda r: Activate(r.u8(), r.u32()),
    MessageType.SELFTEST: _dec_selftest,
    MessageType.CONFIRM: lambda r: Confirm(r.u8()),
    MessageType.REVERT: lambda r: Revert(r.u8(), _enum(ReasonCode, r.u8())),
    MessageType.INFERENCE: _dec_inference,
    MessageType.LOG: lambda r: Log(_enum(LogLevel, r.u8()), r.str16()),
    MessageType.HEARTBEAT: _dec_heartbeat,
    MessageType.ACK: lambda r: Ack(_enum(MessageType, r.u8()), r.u32()),
    MessageType.NACK: lambda r: Nack(
        _enum(MessageType, r.u8()), _enum(ReasonCode, r.u8()), r.str8()
    ),
    MessageType.WINDOW: lambda r: Window(),
}


def message_type(message: Message) -> MessageType:
    """The wire type of `message`."""
    return _TYPES[type(message)]


def encode_message(message: Message) -> tuple[MessageType, bytes]:
    """Encode a message body.

    Raises:
        LocalProtocolError: a field is out of range (too long a text, a bad dtype, ...).
    """
    kind = message_type(message)
    writer = Writer()
    _encode_body(message, writer)
    return kind, writer.bytes()


def decode_message(kind: int, payload: bytes) -> Message:
    """Decode a message body of wire type `kind`.

    Raises:
        DecodeError: unknown type or a payload that does not match the type's layout.
    """
    decoder = _DECODERS.get(_enum(MessageType, kind))
    assert decoder is not None
    reader = Reader(payload)
    message = decoder(reader)
    reader.finish()
    return message
