"""The inter-core messages as frozen dataclasses, one per message type.

Byte layouts are in `_message_codec.py` and `docs/protocol/intercore.md`. Direction is noted
per class: H→C (host, the application core, to a real-time core), C→H, or both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from firmware.icc._reasons import CoreState, ReasonCode, SlotState

__all__ = [
    "ANOMALY_FLAG_VERSION",
    "NO_LABEL",
    "NO_SLOT",
    "PROTOCOL_VERSION",
    "SLOT_ANY",
    "UNSEQUENCED_TYPES",
    "Abort",
    "Ack",
    "Activate",
    "Begin",
    "Caps",
    "Confirm",
    "Data",
    "End",
    "Heartbeat",
    "Hello",
    "Inference",
    "Log",
    "LogLevel",
    "Message",
    "MessageType",
    "Nack",
    "Revert",
    "SelfTest",
    "SlotInfo",
    "Status",
    "TensorSpec",
    "Vector",
    "VectorPart",
    "Window",
]

# The highest application protocol version this package speaks. Version 2 adds INFERENCE's
# anomaly flag; a core sends it only in a session that agreed on version 2 or later.
PROTOCOL_VERSION = 2
ANOMALY_FLAG_VERSION = 2
SLOT_ANY = 0xFF  # in BEGIN: let the core choose its inactive slot
NO_SLOT = 0xFF  # in reports: no slot
NO_LABEL = 0xFF  # in INFERENCE: no class label (score-only models) or unknown ground truth


class MessageType(IntEnum):
    HELLO = 0x01
    CAPS = 0x02
    STATUS = 0x03
    BEGIN = 0x10
    VECTOR = 0x11
    DATA = 0x12
    END = 0x13
    ABORT = 0x14
    ACTIVATE = 0x20
    SELFTEST = 0x21
    CONFIRM = 0x22
    REVERT = 0x23
    INFERENCE = 0x30
    LOG = 0x31
    HEARTBEAT = 0x32
    ACK = 0x40
    NACK = 0x41
    WINDOW = 0x7F


# Types that may travel outside reliable delivery: the handshake, its refusal, and bare acks.
UNSEQUENCED_TYPES = frozenset(
    {MessageType.HELLO, MessageType.CAPS, MessageType.NACK, MessageType.WINDOW}
)


class VectorPart(IntEnum):
    INPUT = 0
    EXPECTED = 1


class LogLevel(IntEnum):
    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


@dataclass(frozen=True)
class Hello:
    """H→C, unsequenced: open (or reopen) a session; offers versions and link limits."""

    nonce: int
    min_version: int
    max_version: int
    max_message_bytes: int
    window: int


@dataclass(frozen=True)
class SlotInfo:
    """One A/B slot as the core's persisted slot table records it."""

    state: SlotState
    model_id: str = ""
    version: str = ""
    length: int = 0
    sha256: bytes = bytes(32)
    arena_bytes: int = 0


@dataclass(frozen=True)
class Caps:
    """C→H: the core's capabilities and state. Unsequenced in reply to HELLO (echoing its
    nonce), sequenced in reply to STATUS (nonce 0)."""

    nonce: int
    version: int
    max_message_bytes: int
    window: int
    core_id: str
    firmware_version: str
    runtime_version: str
    tcm_bytes: int
    sysram_bytes: int
    reserved_bytes: int
    state: CoreState
    active_slot: int
    trial_slot: int
    last_reason: ReasonCode
    slots: tuple[SlotInfo, ...]
    operators: tuple[str, ...]

    @property
    def active_model(self) -> SlotInfo | None:
        """The slot the core runs now (the trial slot during a trial)."""
        slot = self.trial_slot if self.trial_slot != NO_SLOT else self.active_slot
        return self.slots[slot] if slot < len(self.slots) else None


@dataclass(frozen=True)
class Status:
    """H→C: ask for a fresh CAPS."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's dtype name (`int8`, `uint8`, `int16`, `int32`, `float32`) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        size = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "float32": 4}.get(self.dtype, 0)
        count = 1
        for dim in self.shape:
            count *= dim
        return size * count


@dataclass(frozen=True)
class Begin:
    """H→C: announce a model transfer into a slot (`SLOT_ANY` lets the core choose)."""

    slot: int
    model_id: str
    version: str
    length: int
    sha256: bytes
    arena_bytes: int
    input: TensorSpec
    output: TensorSpec
    min_firmware_version: str
    operators: tuple[str, ...]
    vector_count: int


@dataclass(frozen=True)
class Vector:
    """H→C: a piece of one self-test vector (input tensor or expected output tensor)."""

    index: int
    part: VectorPart
    tolerance: int
    total: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Data:
    """H→C: model bytes at `offset`; offsets must follow each other without gaps."""

    offset: int
    data: bytes


@dataclass(frozen=True)
class End:
    """H→C: all bytes sent; the core checks length and sha256 and answers ACK or NACK."""


@dataclass(frozen=True)
class Abort:
    """H→C: drop the transfer in progress."""

    reason: ReasonCode


@dataclass(frozen=True)
class Activate:
    """H→C: load the staged slot, self-test it, and run it as a trial until CONFIRM arrives or
    `confirm_timeout_ms` passes (then the core reverts by itself)."""

    slot: int
    confirm_timeout_ms: int


@dataclass(frozen=True)
class SelfTest:
    """C→H: the result of the self-test run by ACTIVATE."""

    slot: int
    passed: bool
    reason: ReasonCode
    vectors_total: int
    vectors_passed: int
    max_abs_diff: int
    latency_us: int


@dataclass(frozen=True)
class Confirm:
    """H→C: make the trial slot the confirmed model."""

    slot: int


@dataclass(frozen=True)
class Revert:
    """H→C: go back to the previous model. C→H: the core went back (`slot` is the slot now
    running, or `NO_SLOT`), with the reason."""

    slot: int
    reason: ReasonCode


@dataclass(frozen=True)
class Inference:
    """C→H: one inference result. `truth` is the simulated sensor's ground truth (or
    `NO_LABEL`), so the fleet can measure model quality. `anomaly` is an anomaly detector's
    decision for this window (its score against the model's own threshold); None for models
    that are not anomaly detectors, and on the wire of protocol version 1."""

    slot: int
    counter: int
    model_id: str
    version: str
    label: int
    score: float
    latency_us: int
    truth: int = NO_LABEL
    anomaly: bool | None = None


@dataclass(frozen=True)
class Log:
    """C→H: a log line."""

    level: LogLevel
    text: str


@dataclass(frozen=True)
class Heartbeat:
    """C→H: periodic liveness and counters."""

    uptime_ms: int
    state: CoreState
    active_slot: int
    inferences: int


@dataclass(frozen=True)
class Ack:
    """C→H: the request of type `ref_type` succeeded; `value` is type-specific (the slot for
    BEGIN, ACTIVATE, CONFIRM; the length for END)."""

    ref_type: MessageType
    value: int = 0


@dataclass(frozen=True)
class Nack:
    """C→H: the request of type `ref_type` was refused, with a reason code and a short detail."""

    ref_type: MessageType
    reason: ReasonCode
    detail: str = ""


@dataclass(frozen=True)
class Window:
    """Both: a bare acknowledgement frame (link layer only; never delivered upward)."""


Message: TypeAlias = (
    Hello
    | Caps
    | Status
    | Begin
    | Vector
    | Data
    | End
    | Abort
    | Activate
    | SelfTest
    | Confirm
    | Revert
    | Inference
    | Log
    | Heartbeat
    | Ack
    | Nack
    | Window
)
