"""The exception tree of the inter-core contract, split by who must act.

```
IccError                       root: catch this to catch everything raised here
├── ConfigurationError         a profile or limit is invalid (the composition root must fix it)
├── LocalProtocolError         we tried something the protocol forbids (a bug on our side)
│   └── MessageTooLargeError   an outgoing message does not fit in one frame of this profile
└── RemoteProtocolError        the peer sent something the protocol forbids
    ├── DecodeError            malformed bytes: bad magic, length, CRC, type or field
    └── PeerUnresponsiveError  the peer acknowledged nothing after every retransmission
```

Reason codes for refusals travel on the wire (`ReasonCode`); these exceptions never do.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "IccError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "PeerUnresponsiveError",
    "RemoteProtocolError",
]


class IccError(Exception):
    """Root of every error raised by `firmware.icc`."""


class ConfigurationError(IccError):
    """A profile or limit is out of range."""


class LocalProtocolError(IccError):
    """Our side tried an operation the protocol does not allow in this state."""


class MessageTooLargeError(LocalProtocolError):
    """An outgoing message would exceed the profile's message size."""


class RemoteProtocolError(IccError):
    """The peer broke the protocol."""


class DecodeError(RemoteProtocolError):
    """Bytes that are not a valid frame or message."""


class PeerUnresponsiveError(RemoteProtocolError):
    """A frame went unacknowledged after the profile's maximum number of retransmissions."""
