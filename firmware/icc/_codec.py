"""Little-endian field readers and writers shared by every message layout.

Every read is bounds-checked and raises `DecodeError`; every write checks ranges and raises
`LocalProtocolError`, so a bad value never turns into a silently truncated field.
"""

from __future__ import annotations

import struct

from firmware.icc._errors import DecodeError, LocalProtocolError

__all__ = ["Reader", "Writer"]

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")


class Writer:
    """Appends fields to a growing payload."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        return self._pack(_U8, value, 0xFF)

    def u16(self, value: int) -> Writer:
        return self._pack(_U16, value, 0xFFFF)

    def u32(self, value: int) -> Writer:
        return self._pack(_U32, value, 0xFFFFFFFF)

    def u64(self, value: int) -> Writer:
        return self._pack(_U64, value, 0xFFFFFFFFFFFFFFFF)

    def f32(self, value: float) -> Writer:
        self._parts.append(_F32.pack(value))
        return self

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def fixed(self, data: bytes, size: int) -> Writer:
        if len(data) != size:
            raise LocalProtocolError(f"field needs exactly {size} bytes, got {len(data)}")
        return self.raw(data)

    def str8(self, text: str) -> Writer:
        encoded = text.encode("utf-8")
        if len(encoded) > 0xFF:
            raise LocalProtocolError(f"text field longer than 255 bytes: {text[:32]!r}...")
        return self.u8(len(encoded)).raw(encoded)

    def str16(self, text: str) -> Writer:
        encoded = text.encode("utf-8")
        if len(encoded) > 0xFFFF:
            raise LocalProtocolError("text field longer than 65535 bytes")
        return self.u16(len(encoded)).raw(encoded)

    def shape(self, dims: tuple[int, ...]) -> Writer:
        if len(dims) > 8:
            raise LocalProtocolError(f"tensor rank {len(dims)} exceeds 8")
        self.u8(len(dims))
        for dim in dims:
            self.u16(dim)
        return self

    def bytes(self) -> bytes:
        return b"".join(self._parts)

    def _pack(self, codec: struct.Struct, value: int, limit: int) -> Writer:
        if not 0 <= value <= limit:
            raise LocalProtocolError(f"value {value} out of range 0..{limit}")
        self._parts.append(codec.pack(value))
        return self


class Reader:
    """Consumes fields from one payload; `finish()` insists nothing is left over."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def u8(self) -> int:
        return int(self._unpack(_U8))

    def u16(self) -> int:
        return int(self._unpack(_U16))

    def u32(self) -> int:
        return int(self._unpack(_U32))

    def u64(self) -> int:
        return int(self._unpack(_U64))

    def f32(self) -> float:
        return float(self._unpack(_F32))

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise DecodeError(f"field of {size} bytes runs past the end of the payload")
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._pos)

    def str8(self) -> str:
        return self._text(self.u8())

    def str16(self) -> str:
        return self._text(self.u16())

    def shape(self) -> tuple[int, ...]:
        rank = self.u8()
        if rank > 8:
            raise DecodeError(f"tensor rank {rank} exceeds 8")
        return tuple(self.u16() for _ in range(rank))

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(f"{len(self._data) - self._pos} unexpected trailing bytes")

    def _text(self, size: int) -> str:
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("text field is not UTF-8") from exc

    def _unpack(self, codec: struct.Struct) -> int | float:
        value = codec.unpack_from(self.take(codec.size))[0]
        assert isinstance(value, int | float)
        return value
