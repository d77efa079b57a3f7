"""Frames: layout, limits, and a decoder that survives any split and any garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.icc import (
    OVERHEAD_BYTES,
    DecodeError,
    Frame,
    FrameDecoder,
    MessageTooLargeError,
    decode_frame,
    encode_frame,
)

LIMIT = 1024
frames = st.builds(
    Frame,
    type=st.integers(0, 255),
    payload=st.binary(max_size=LIMIT - OVERHEAD_BYTES),
    seq=st.integers(0, 0xFFFF),
    ack=st.integers(0, 0xFFFF),
    flags=st.integers(0, 3),
)


def test_frame_round_trips_and_uses_the_documented_overhead() -> None:
    frame = Frame(type=0x12, payload=b"abc", seq=7, ack=9, flags=3)
    data = encode_frame(frame, LIMIT)
    assert len(data) == OVERHEAD_BYTES + 3 == 17
    assert data[:2] == b"\xc5\x1c"
    assert decode_frame(data, LIMIT) == frame


def test_a_frame_larger_than_the_profile_message_is_refused_at_the_sender() -> None:
    with pytest.raises(MessageTooLargeError, match="limit is 496"):
        encode_frame(Frame(type=1, payload=bytes(496 - OVERHEAD_BYTES + 1)), 496)
    encode_frame(Frame(type=1, payload=bytes(496 - OVERHEAD_BYTES)), 496)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x00" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x21" + b[3:], "framing version"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"x", "after the frame"),
    ],
    ids=["bad-magic", "unknown-version", "bad-crc", "truncated", "trailing-bytes"],
)
def test_decode_frame_names_what_is_wrong(mutate: object, message: str) -> None:
    assert callable(mutate)
    data = encode_frame(Frame(type=1, payload=b"hello"), LIMIT)
    with pytest.raises(DecodeError, match=message):
        decode_frame(mutate(data), LIMIT)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames, max_size=6), st.data())
def test_any_split_of_a_stream_decodes_to_the_same_frames(
    sent: list[Frame], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(f, LIMIT) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder(LIMIT)
    got: list[Frame] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        got.extend(decoder.feed(stream[previous:cut]))
        previous = cut
    assert got == sent
    assert decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_the_decoder_never_raises_and_never_holds_more_than_a_frame(garbage: bytes) -> None:
    decoder = FrameDecoder(LIMIT)
    decoder.feed(garbage)
    assert decoder.buffered < LIMIT


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), frames)
def test_the_decoder_resynchronises_after_garbage(garbage: bytes, frame: Frame) -> None:
    decoder = FrameDecoder(LIMIT)
    # Garbage that ends in a partial header could swallow the frame; a clean frame boundary
    # is what every real transport provides, so terminate the garbage with a bad-CRC frame.
    broken = bytearray(encode_frame(Frame(type=2, payload=b"x"), LIMIT))
    broken[-1] ^= 0xFF
    decoder.feed(garbage.replace(b"\xc5", b"\xc4") + bytes(broken))
    assert decoder.feed(encode_frame(frame, LIMIT)) == [frame]
