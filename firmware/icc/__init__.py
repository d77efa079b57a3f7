"""The pure inter-core wire contract (standard library only).

Frames, messages, reason codes, device profiles and the reliable windowed link that both the
application-core agent (`device_agent.intercore`) and the simulated real-time cores
(`firmware`) speak. No I/O, no clock reads: drivers pass bytes and time in. The specification
is `docs/protocol/intercore.md`.
"""

from __future__ import annotations

from firmware.icc._errors import (
    ConfigurationError,
    DecodeError,
    IccError,
    LocalProtocolError,
    MessageTooLargeError,
    PeerUnresponsiveError,
    RemoteProtocolError,
)
from firmware.icc._framing import OVERHEAD_BYTES, Frame, FrameDecoder, decode_frame, encode_frame
from firmware.icc._handshake import Negotiated, negotiate
from firmware.icc._link import LinkStats, ReliableLink
from firmware.icc._message_codec import decode_message, encode_message, message_type
from firmware.icc._messages import (
    ANOMALY_FLAG_VERSION,
    NO_LABEL,
    NO_SLOT,
    PROTOCOL_VERSION,
    SLOT_ANY,
    UNSEQUENCED_TYPES,
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
from firmware.icc._profiles import LINUX_A7_M4, MT3620, PROFILES, DeviceProfile, profile_named
from firmware.icc._reasons import CoreState, ReasonCode, SlotState

__all__ = [
    "ANOMALY_FLAG_VERSION",
    "LINUX_A7_M4",
    "MT3620",
    "NO_LABEL",
    "NO_SLOT",
    "OVERHEAD_BYTES",
    "PROFILES",
    "PROTOCOL_VERSION",
    "SLOT_ANY",
    "UNSEQUENCED_TYPES",
    "Abort",
    "Ack",
    "Activate",
    "Begin",
    "Caps",
    "ConfigurationError",
    "Confirm",
    "CoreState",
    "Data",
    "DecodeError",
    "DeviceProfile",
    "End",
    "Frame",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "IccError",
    "Inference",
    "LinkStats",
    "LocalProtocolError",
    "Log",
    "LogLevel",
    "Message",
    "MessageTooLargeError",
    "MessageType",
    "Nack",
    "Negotiated",
    "PeerUnresponsiveError",
    "ReasonCode",
    "ReliableLink",
    "RemoteProtocolError",
    "Revert",
    "SelfTest",
    "SlotInfo",
    "SlotState",
    "Status",
    "TensorSpec",
    "Vector",
    "VectorPart",
    "Window",
    "decode_frame",
    "decode_message",
    "encode_frame",
    "encode_message",
    "message_type",
    "negotiate",
    "profile_named",
]
