"""Device ids: the IoT Hub alphabet, and the one safe way an id becomes a path or URL segment.

IoT Hub device ids are case-sensitive, 1..128 ASCII letters, digits and `- . + % _ # * ? ! ( ) ,
: = @ $ '` (the "device identity registry" rules). The hub gateway, the director and the blob
grants all check ids with `check_device_id` here, so no part refuses an id another accepted.

`device_segment(id)` is the id as one path segment (director folder, blob name, URL path):

- letters, digits, `_`, `-` and a `.` that is not the first character stay as they are, so the
  ids of the old, narrower rule keep their folders;
- every other character becomes `~XX` (its hex code); `~` is not in the alphabet, so the form
  is reversible (`device_from_segment`);
- if that form would exceed `MAX_SEGMENT` (a file name on most filesystems is at most 255
  bytes), the segment is `~~` and the lowercase base32 of the id instead.

Invariants: a segment only contains `[A-Za-z0-9._~-]` (unreserved in URLs, inert on every
filesystem and in blob names), never starts with `.` (so never `.`, `..` or a hidden file), is at
most `MAX_SEGMENT` characters, and `device_from_segment(device_segment(i)) == i`.
"""

from __future__ import annotations

import base64
import binascii
import re
import string

__all__ = [
    "DEVICE_ID_MAX",
    "DEVICE_ID_SPECIALS",
    "MAX_SEGMENT",
    "InvalidDeviceId",
    "check_device_id",
    "device_from_segment",
    "device_segment",
    "is_device_id",
]

DEVICE_ID_MAX = 128
DEVICE_ID_SPECIALS = "-.+%_#*?!(),:=@$'"
MAX_SEGMENT = 240
_ALPHABET = frozenset(string.ascii_letters + string.digits + DEVICE_ID_SPECIALS)
_KEEP = frozenset(string.ascii_letters + string.digits + "_-.")
_ESCAPE = re.compile(r"~([0-9A-F]{2})")
_BASE32 = "~~"


class InvalidDeviceId(ValueError):
    """Not an IoT Hub device id (or not a segment `device_segment` made)."""


def is_device_id(device_id: object) -> bool:
    return (
        isinstance(device_id, str)
        and 0 < len(device_id) <= DEVICE_ID_MAX
        and all(c in _ALPHABET for c in device_id)
    )


def check_device_id(device_id: object) -> str:
    if not is_device_id(device_id):
        raise InvalidDeviceId(
            f"device id {device_id!r}: 1-{DEVICE_ID_MAX} of letters, digits and "
            f"{' '.join(DEVICE_ID_SPECIALS)}"
        )
    assert isinstance(device_id, str)
    return device_id


def device_segment(device_id: str) -> str:
    """The id as one path or URL segment; raises InvalidDeviceId for a non-id."""
    check_device_id(device_id)
    escaped = "".join(
        c if c in _KEEP and not (i == 0 and c == ".") else f"~{ord(c):02X}"
        for i, c in enumerate(device_id)
    )
    if len(escaped) <= MAX_SEGMENT:
        return escaped
    encoded = base64.b32encode(device_id.encode("ascii")).decode("ascii").rstrip("=").lower()
    return _BASE32 + encoded


def device_from_segment(segment: str) -> str:
    """The id `device_segment` turned into `segment`; raises InvalidDeviceId otherwise."""
    if segment.startswith(_BASE32):
        body = segment[len(_BASE32) :].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError) as exc:
            raise InvalidDeviceId(f"segment {segment!r} is not an encoded device id") from exc
        device_id = raw.decode("ascii", errors="replace")
    else:
        device_id = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), segment)
    if not is_device_id(device_id) or device_segment(device_id) != segment:
        raise InvalidDeviceId(f"segment {segment!r} is not an encoded device id")
    return device_id
