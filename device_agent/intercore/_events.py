"""What the host side reports upward: core status, self-test reports, and the events `poll()`
returns. Plain frozen dataclasses with JSON-friendly fields, ready for twin reporting and
telemetry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from firmware.icc import NO_LABEL, NO_SLOT, Caps, Inference, SelfTest

__all__ = [
    "CoreEvent",
    "CoreHeartbeat",
    "CoreLog",
    "CoreReverted",
    "CoreStatus",
    "InferenceResult",
    "SelfTestReport",
    "SlotView",
]


@dataclass(frozen=True)
class SlotView:
    slot: int
    state: str  # empty | staged | active | trial | previous | failed
    model_id: str
    version: str
    length: int
    sha256: str
    arena_bytes: int


@dataclass(frozen=True)
class CoreStatus:
    core_id: str
    firmware_version: str
    runtime_version: str
    state: str  # empty | running | receiving | trial | fault
    active_slot: int | None
    trial_slot: int | None
    last_reason: str
    slots: tuple[SlotView, ...]
    operators: tuple[str, ...]
    ram_bytes: int
    reserved_bytes: int
    protocol_version: int

    @property
    def running(self) -> SlotView | None:
        """The slot whose model runs now (the trial's during a trial)."""
        slot = self.trial_slot if self.trial_slot is not None else self.active_slot
        return None if slot is None else self.slots[slot]

    @classmethod
    def from_caps(cls, caps: Caps) -> CoreStatus:
        slots = tuple(
            SlotView(
                i,
                s.state.name.lower(),
                s.model_id,
                s.version,
                s.length,
                s.sha256.hex(),
                s.arena_bytes,
            )
            for i, s in enumerate(caps.slots)
        )
        return cls(
            core_id=caps.core_id,
            firmware_version=caps.firmware_version,
            runtime_version=caps.runtime_version,
            state=caps.state.name.lower(),
            active_slot=None if caps.active_slot == NO_SLOT else caps.active_slot,
            trial_slot=None if caps.trial_slot == NO_SLOT else caps.trial_slot,
            last_reason=caps.last_reason.name,
            slots=slots,
            operators=caps.operators,
            ram_bytes=caps.tcm_bytes + caps.sysram_bytes,
            reserved_bytes=caps.reserved_bytes,
            protocol_version=caps.version,
        )


@dataclass(frozen=True)
class SelfTestReport:
    slot: int
    passed: bool
    reason: str
    vectors_total: int
    vectors_passed: int
    max_abs_diff: int
    latency_us: int

    @property
    def summary(self) -> str:
        passed = f"{self.vectors_passed}/{self.vectors_total} vectors passed"
        return f"{passed}, max diff {self.max_abs_diff}"

    @classmethod
    def from_message(cls, m: SelfTest) -> SelfTestReport:
        return cls(
            m.slot,
            m.passed,
            m.reason.name,
            m.vectors_total,
            m.vectors_passed,
            m.max_abs_diff,
            m.latency_us,
        )


@dataclass(frozen=True)
class InferenceResult:
    """One inference on a core. `truth` is the simulated sensor's ground truth (None if
    unknown), so that telemetry can measure each model version's quality. `anomaly` is an
    anomaly detector's decision for the window; None for models that are not detectors (and
    for cores that speak protocol version 1)."""

    core_id: str
    slot: int
    counter: int
    model_id: str
    version: str
    label: int | None
    score: float
    latency_us: int
    truth: int | None
    anomaly: bool | None = None

    @property
    def correct(self) -> bool | None:
        return None if self.truth is None or self.label is None else self.label == self.truth

    @classmethod
    def from_message(cls, core_id: str, m: Inference) -> InferenceResult:
        return cls(
            core_id, m.slot, m.counter, m.model_id, m.version,
            None if m.label == NO_LABEL else m.label, m.score, m.latency_us,
            None if m.truth == NO_LABEL else m.truth, m.anomaly,
        )  # fmt: skip


@dataclass(frozen=True)
class CoreLog:
    core_id: str
    level: str
    text: str


@dataclass(frozen=True)
class CoreHeartbeat:
    core_id: str
    uptime_ms: int
    state: str
    running_slot: int | None
    inferences: int


@dataclass(frozen=True)
class CoreReverted:
    """The core went back to its previous model by itself (CONFIRM_TIMEOUT)."""

    core_id: str
    running_slot: int | None
    reason: str


CoreEvent: TypeAlias = InferenceResult | CoreLog | CoreHeartbeat | CoreReverted
