"""Message layouts: every type round-trips, hostile payloads raise only DecodeError."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.icc import (
    LINUX_A7_M4,
    MT3620,
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
    Inference(0, 7, "vibration", "2.0.0", 1, 0.5, 300, 1, anomaly=True),
    Inference(0, 8, "vibration", "2.0.0", 0, 0.25, 300, 0, anomaly=False),
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


# INFERENCE as protocol version 1 laid it out (no anomaly byte) and as version 2 adds it: the
# bytes a C port must produce and accept, field by field.
_INFERENCE_V1 = bytes.fromhex(
    "000700000009" + b"vibration".hex() + "05" + b"2.0.0".hex() + "010000003f2c01000001"
)


@pytest.mark.parametrize(
    ("payload", "anomaly"),
    [(_INFERENCE_V1, None), (_INFERENCE_V1 + b"\x00", False), (_INFERENCE_V1 + b"\x01", True)],
    ids=["v1-no-flag", "v2-normal", "v2-anomalous"],
)
def test_inference_test_vectors_decode_with_and_without_the_anomaly_byte(
    payload: bytes, anomaly: bool | None
) -> None:
    message = Inference(0, 7, "vibration", "2.0.0", 1, 0.5, 300, 1, anomaly=anomaly)
    assert decode_message(MessageType.INFERENCE, payload) == message
    assert encode_message(message) == (MessageType.INFERENCE, payload)


def test_an_inference_without_a_flag_keeps_the_version_1_layout() -> None:
    plain = Inference(1, 42, "kws", "2.0.0", 3, 0.875, 950, 3)
    assert plain.anomaly is None
    assert len(encode_message(plain)[1]) == len(encode_message(replace(plain, anomaly=True))[1]) - 1


def test_a_flagged_inference_fits_the_frame_limits() -> None:
    longest = Inference(0, 2**32 - 1, "m" * 255, "v" * 255, 0, 1.0, 2**32 - 1, 0, anomaly=True)
    assert OVERHEAD_BYTES + len(encode_message(longest)[1]) <= MT3620.max_message_bytes
    long_ids = replace(longest, model_id="m" * 64, version="v" * 32)
    assert OVERHEAD_BYTES + len(encode_message(long_ids)[1]) <= LINUX_A7_M4.max_message_bytes


@pytest.mark.parametrize(
    ("kind", "payload", "match"),
    [
        (0x55, b"", "not a valid MessageType"),
        (MessageType.CONFIRM, b"", "runs past the end"),
        (MessageType.CONFIRM, b"\x01\x02", "trailing"),
        (MessageType.ABORT, b"\xee", "not a valid ReasonCode"),
        (MessageType.LOG, b"\x01\x02\x00\xff\xfe", "not UTF-8"),
        (MessageType.SELFTEST, b"\x00\x07" + bytes(10), "boolean"),
        (MessageType.INFERENCE, _INFERENCE_V1 + b"\x02", "anomaly flag"),
        (MessageType.INFERENCE, _INFERENCE_V1 + b"\x01\x00", "trailing"),
    ],
    ids=[
        "unknown-type",
        "short",
        "long",
        "bad-enum",
        "bad-utf8",
        "bad-bool",
        "bad-anomaly-flag",
        "inference-too-long",
    ],
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
