"""Message layouts: every type round-trips, hostile payloads raise only DecodeError."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.icc import (
    LINUX_A7_M4,
    NO_SLOT,
    OVERHEAD_BYTES,
    Abort,
    Ack,
    Activate,
    Begin,
    Caps,
    Confirm,
    CoreState,
    Data,
    DecodeError,
    End,
    Heartbeat,
    Hello,
    Inference,
    LocalProtocolError,
    Log,
    LogLevel,
    Message,
    MessageType,
    Nack,
    ReasonCode,
    Revert,
    SelfTest,
    SlotInfo,
    SlotState,
    Status,
    TensorSpec,
    Vector,
    VectorPart,
    Window,
    decode_message,
    encode_message,
)

SHA = hashlib.sha256(b"model").digest()
SLOT = SlotInfo(SlotState.ACTIVE, "kws", "2.0.0", 16384, SHA, 20480)
EXAMPLES: list[Message] = [
    Hello(nonce=0xDEADBEEF, min_version=1, max_version=3, max_message_bytes=1024, window=8),
    Caps(
        7,
        1,
        1024,
        8,
        "m4-0",
        "1.0.0",
        "tflm-2026.10",
        196608,
        65536,
        16384,
        CoreState.TRIAL,
        0,
        1,
        ReasonCode.OK,
        (SLOT, SlotInfo(SlotState.EMPTY)),
        ("FULLY_CONNECTED", "SOFTMAX"),
    ),
    Status(),
    Begin(
        0xFF,
        "kws",
        "2.0.0",
        16384,
        SHA,
        20480,
        TensorSpec("int8", (1, 49, 10)),
        TensorSpec("int8", (1, 4)),
        "1.0.0",
        ("FULLY_CONNECTED", "SOFTMAX"),
        2,
    ),
    Vector(1, VectorPart.EXPECTED, 2, 4, 0, b"\x01\x02\x03\x04"),
    Data(offset=1006, data=b"\x00" * 100),
    End(),
    Abort(ReasonCode.ABORTED),
    Activate(slot=1, confirm_timeout_ms=30000),
    SelfTest(1, False, ReasonCode.SELFTEST_FAILED, 2, 1, 37, 1200),
    Confirm(1),
    Revert(0, ReasonCode.CONFIRM_TIMEOUT),
    Inference(1, 42, "kws", "2.0.0", 3, 0.875, 950, 3),
    Log(LogLevel.WARNING, "arena nearly full"),
    Heartbeat(uptime_ms=2**40, state=CoreState.RUNNING, active_slot=0, inferences=9),
    Ack(MessageType.END, 16384),
    Nack(MessageType.BEGIN, ReasonCode.BUDGET_EXCEEDED, "needs 300000 bytes, has 245760"),
    Window(),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips(message: Message) -> None:
    kind, payload = encode_message(message)
    assert decode_message(kind, payload) == message


def test_every_message_type_has_an_example() -> None:
    assert {encode_message(m)[0] for m in EXAMPLES} == set(MessageType)


def test_a_full_caps_fits_the_smallest_profile_message() -> None:
    long_slot = SlotInfo(SlotState.PREVIOUS, "m" * 32, "10.20.30", 2**31, SHA, 2**20)
    ops = (
        "FULLY_CONNECTED",
        "SOFTMAX",
        "RELU",
        "RESHAPE",
        "QUANTIZE",
        "DEQUANTIZE",
        "LOGISTIC",
        "TANH",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "ADD",
        "MUL",
    )
    caps = Caps(
        1,
        1,
        496,
        8,
        "m4-1",
        "1.10.100",
        "tflm-2026.10.23",
        1,
        1,
        1,
        CoreState.FAULT,
        1,
        NO_SLOT,
        ReasonCode.OK,
        (long_slot, long_slot),
        ops,
    )
    assert OVERHEAD_BYTES + len(encode_message(caps)[1]) <= LINUX_A7_M4.max_message_bytes


@pytest.mark.parametrize(
    "message",
    [
        Log(LogLevel.INFO, "x" * 70000),
        Nack(MessageType.BEGIN, ReasonCode.BUSY, "y" * 300),
        Begin(
            0,
            "kws",
            "1",
            1,
            SHA[:5],
            1,
            TensorSpec("int8", (1,)),
            TensorSpec("int8", (1,)),
            "1",
            (),
            0,
        ),
        Begin(
            0,
            "kws",
            "1",
            1,
            SHA,
            1,
            TensorSpec("bfloat16", (1,)),
            TensorSpec("int8", (1,)),
            "1",
            (),
            0,
        ),
        Activate(slot=300, confirm_timeout_ms=1),
        Caps(
            1, 1, 1, 1, "c", "1", "r", 1, 1, 1, CoreState.RUNNING, 0, 0, ReasonCode.OK, (), ("A,B",)
        ),
    ],
    ids=[
        "text-too-long",
        "detail-too-long",
        "short-sha256",
        "unknown-dtype",
        "slot-out-of-range",
        "comma-in-operator",
    ],
)
def test_encoding_refuses_values_the_layout_cannot_carry(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(message)


@pytest.mark.parametrize(
    ("kind", "payload", "match"),
    [
        (0x55, b"", "not a valid MessageType"),
        (MessageType.CONFIRM, b"", "runs past the end"),
        (MessageType.CONFIRM, b"\x01\x02", "trailing"),
        (MessageType.ABORT, b"\xee", "not a valid ReasonCode"),
        (MessageType.LOG, b"\x01\x02\x00\xff\xfe", "not UTF-8"),
        (MessageType.SELFTEST, b"\x00\x07" + bytes(10), "boolean"),
    ],
    ids=["unknown-type", "short", "long", "bad-enum", "bad-utf8", "bad-bool"],
)
def test_decoding_names_the_problem(kind: int, payload: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_message(kind, payload)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(list(MessageType)), st.binary(max_size=600))
def test_hostile_payloads_raise_only_decode_error(kind: MessageType, payload: bytes) -> None:
    try:
        message = decode_message(kind, payload)
    except DecodeError:
        return
    # Decoded messages re-encode to the same layout (NaN scores may change their payload bits).
    assert len(encode_message(message)[1]) == len(payload)
