"""Frames: the unit one transport message carries, with type, sequence numbers and a CRC.

Layout (little-endian), `HEADER_BYTES` + payload + `CRC_BYTES`:

```
offset size field
0      2    magic      b"\\xc5\\x1c"
2      1    ver_flags  high nibble: framing version (1); low nibble: flags
                         0x1 SEQUENCED  the frame takes part in reliable delivery (seq is valid)
                         0x2 ACK_VALID  `ack` acknowledges the peer's frames
3      1    type       MessageType
4      2    seq        sequence number of this frame (mod 2**16)
6      2    ack        next sequence number this side expects from the peer (cumulative)
8      2    length     payload length
10     n    payload    the message body (see _messages.py)
10+n   4    crc32      zlib CRC-32 of bytes 0 .. 10+n
```

Invariants:
 * `encode_frame(f)` is at most the profile's `max_message_bytes`, or it raises.
 * `FrameDecoder.feed` never raises on hostile input: it drops bytes that do not form a valid
   frame, counts them, and resynchronises on the next magic. Any split or merge of a valid
   byte stream decodes to the same frames.
 * The decoder holds at most one maximal frame plus one feed in its buffer.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from firmware.icc._errors import DecodeError, MessageTooLargeError

__all__ = [
    "CRC_BYTES",
    "FLAG_ACK_VALID",
    "FLAG_SEQUENCED",
    "FRAMING_VERSION",
    "HEADER_BYTES",
    "MAGIC",
    "OVERHEAD_BYTES",
    "Frame",
    "FrameDecoder",
    "decode_frame",
    "encode_frame",
]

MAGIC = b"\xc5\x1c"
FRAMING_VERSION = 1
FLAG_SEQUENCED = 0x1
FLAG_ACK_VALID = 0x2
_KNOWN_FLAGS = FLAG_SEQUENCED | FLAG_ACK_VALID
_HEADER = struct.Struct("<2sBBHHH")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size
CRC_BYTES = _CRC.size
OVERHEAD_BYTES = HEADER_BYTES + CRC_BYTES


@dataclass(frozen=True)
class Frame:
    """One decoded frame. `payload` is the still-encoded message body."""

    type: int
    payload: bytes
    seq: int = 0
    ack: int = 0
    flags: int = 0

    @property
    def sequenced(self) -> bool:
        return bool(self.flags & FLAG_SEQUENCED)

    @property
    def ack_valid(self) -> bool:
        return bool(self.flags & FLAG_ACK_VALID)


def encode_frame(frame: Frame, max_message_bytes: int) -> bytes:
    """Serialise `frame`.

    Raises:
        MessageTooLargeError: the frame would exceed `max_message_bytes`.
    """
    size = OVERHEAD_BYTES + len(frame.payload)
    if size > max_message_bytes:
        raise MessageTooLargeError(
            f"frame of type {frame.type:#04x} needs {size} bytes, the limit is {max_message_bytes}"
        )
    header = _HEADER.pack(
        MAGIC,
        (FRAMING_VERSION << 4) | (frame.flags & 0x0F),
        frame.type,
        frame.seq & 0xFFFF,
        frame.ack & 0xFFFF,
        len(frame.payload),
    )
    body = header + frame.payload
    return body + _CRC.pack(zlib.crc32(body))


def decode_frame(data: bytes, max_message_bytes: int) -> Frame:
    """Decode exactly one frame from `data` (a datagram).

    Raises:
        DecodeError: `data` is not exactly one valid frame.
    """
    if len(data) > max_message_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds the limit {max_message_bytes}")
    frame, used = _parse(data, 0, max_message_bytes)
    if frame is None:
        raise DecodeError(f"truncated frame ({len(data)} bytes)")
    if used != len(data):
        raise DecodeError(f"{len(data) - used} bytes after the frame")
    return frame


def _parse(buf: bytes | bytearray, start: int, max_message_bytes: int) -> tuple[Frame | None, int]:
    """Parse a frame at `start`: (frame, end) when complete, (None, start) when more is needed.

    Raises:
        DecodeError: the bytes at `start` cannot begin a valid frame.
    """
    available = len(buf) - start
    if available < HEADER_BYTES:
        prefix = min(available, len(MAGIC))
        if bytes(buf[start : start + prefix]) != MAGIC[:prefix]:
            raise DecodeError("bad magic")
        return None, start
    magic, ver_flags, msg_type, seq, ack, length = _HEADER.unpack_from(buf, start)
    if magic != MAGIC:
        raise DecodeError("bad magic")
    if ver_flags >> 4 != FRAMING_VERSION:
        raise DecodeError(f"unknown framing version {ver_flags >> 4}")
    if ver_flags & 0x0F & ~_KNOWN_FLAGS:
        raise DecodeError(f"unknown frame flags {ver_flags & 0x0F:#x}")
    if OVERHEAD_BYTES + length > max_message_bytes:
        raise DecodeError(f"declared payload of {length} bytes exceeds the message limit")
    end = start + HEADER_BYTES + length + CRC_BYTES
    if len(buf) < end:
        return None, start
    body = bytes(buf[start : end - CRC_BYTES])
    (crc,) = _CRC.unpack_from(buf, end - CRC_BYTES)
    if zlib.crc32(body) != crc:
        raise DecodeError("CRC mismatch")
    payload = body[HEADER_BYTES:]
    return Frame(type=msg_type, payload=payload, seq=seq, ack=ack, flags=ver_flags & 0x0F), end


class FrameDecoder:
    """Turns a stream (or a sequence of datagrams) of bytes into frames.

    Works for message transports (one frame per datagram) and byte streams alike, and recovers
    from corruption by scanning for the next magic. `discarded_bytes` and `bad_frames` count
    what was thrown away, for link-error telemetry.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._buf = bytearray()
        self.discarded_bytes = 0
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return every frame now complete, in order."""
        self._buf += data
        frames: list[Frame] = []
        pos = 0
        while pos < len(self._buf):
            try:
                frame, end = _parse(self._buf, pos, self._max)
            except DecodeError:
                self.bad_frames += 1
                pos = self._resync(pos + 1)
                continue
            if frame is None:
                break
            frames.append(frame)
            pos = end
        del self._buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def _resync(self, pos: int) -> int:
        found = self._buf.find(MAGIC[:1], pos)
        next_pos = len(self._buf) if found < 0 else found
        self.discarded_bytes += next_pos - pos + 1
        return next_pos
