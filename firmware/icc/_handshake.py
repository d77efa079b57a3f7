"""Version and limit negotiation for HELLO/CAPS.

The host offers a range of protocol versions and its message and window limits; the core picks
the highest version both speak and the smaller of each limit, and echoes them in CAPS. If the
ranges do not overlap, the core answers with an unsequenced NACK(VERSION_UNSUPPORTED).
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.icc._messages import Hello

__all__ = ["Negotiated", "negotiate"]


@dataclass(frozen=True)
class Negotiated:
    version: int
    max_message_bytes: int
    window: int


def negotiate(
    hello: Hello, *, min_version: int, max_version: int, max_message_bytes: int, window: int
) -> Negotiated | None:
    """The session parameters for `hello`, or None if no protocol version is shared."""
    version = min(hello.max_version, max_version)
    if version < max(hello.min_version, min_version):
        return None
    return Negotiated(
        version=version,
        max_message_bytes=min(hello.max_message_bytes, max_message_bytes),
        window=max(1, min(hello.window, window)),
    )
