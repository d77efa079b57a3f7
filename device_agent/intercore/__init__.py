"""The host (A7) side of the inter-core protocol: drive one real-time core through a transport.

Typical use by the update workflow (one `CoreClient` per core):

    client = CoreClient(transport, profile)
    client.connect()                                  # HELLO/CAPS -> CoreStatus
    target = ModelTarget.from_custom(custom, length=n, sha256=digest)
    slot = client.stage(target, verified_chunks)      # streams; never holds the whole model
    report = client.activate(slot, confirm_timeout_s=60)   # self-test passed, trial running
    client.confirm(slot)                              # or client.revert()
    for event in client.poll(timeout=0.5): ...        # inference results, logs, heartbeats

Failures raise the `CoreLinkError` family; refusals carry the wire `ReasonCode`.
"""

from __future__ import annotations

from device_agent.intercore._client import ClientLimits, CoreClient
from device_agent.intercore._errors import (
    CoreLinkError,
    CoreRefusedError,
    CoreStateError,
    CoreUnavailableError,
    TargetMetadataError,
)
from device_agent.intercore._events import (
    CoreEvent,
    CoreHeartbeat,
    CoreLog,
    CoreReverted,
    CoreStatus,
    InferenceResult,
    SelfTestReport,
    SlotView,
)
from device_agent.intercore._exits import EXIT_UNKNOWN, RunningModel, crash_code, crash_reason
from device_agent.intercore._faults import FaultPlan, FaultyChannel
from device_agent.intercore._process import CoreProcess
from device_agent.intercore._state import HostPhase
from device_agent.intercore._target import ModelTarget, SelfTestVector
from device_agent.intercore._transport import (
    CoreTransport,
    DatagramPort,
    DatagramTransport,
    MemoryTransport,
    SeqpacketTransport,
    datagram_pipe,
    memory_pipe,
)

__all__ = [
    "EXIT_UNKNOWN",
    "ClientLimits",
    "CoreClient",
    "CoreEvent",
    "CoreHeartbeat",
    "CoreLinkError",
    "CoreLog",
    "CoreProcess",
    "CoreRefusedError",
    "CoreReverted",
    "CoreStateError",
    "CoreStatus",
    "CoreTransport",
    "CoreUnavailableError",
    "DatagramPort",
    "DatagramTransport",
    "FaultPlan",
    "FaultyChannel",
    "HostPhase",
    "InferenceResult",
    "MemoryTransport",
    "ModelTarget",
    "RunningModel",
    "SelfTestReport",
    "SelfTestVector",
    "SeqpacketTransport",
    "SlotView",
    "TargetMetadataError",
    "crash_code",
    "crash_reason",
    "datagram_pipe",
    "memory_pipe",
]
