"""The pure device-to-cloud wire contract: twin shapes and the telemetry schema.

Standard library only, no I/O and no clock reads, so a C port can follow it line by line.
Specified in `docs/protocol/device-cloud.md`.
"""

from device_agent.protocol.telemetry import (
    SCHEMA,
    BatchBuilder,
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
    TelemetryError,
    decode_batch,
    encode_batch,
    message_properties,
)
from device_agent.protocol.twin import (
    COMPONENT,
    AgentState,
    CoreReport,
    CoreState,
    DesiredService,
    ReportedAgent,
    ResultReport,
    TwinError,
    WorkflowAction,
    WorkflowPhase,
    ack_patch,
    agent_patch,
    parse_desired,
    parse_reported,
)

__all__ = [
    "COMPONENT",
    "SCHEMA",
    "AgentState",
    "BatchBuilder",
    "CoreReport",
    "CoreState",
    "DesiredService",
    "EventRecord",
    "HealthRecord",
    "InferenceRecord",
    "ReportedAgent",
    "ResultReport",
    "TelemetryBatch",
    "TelemetryError",
    "TwinError",
    "WorkflowAction",
    "WorkflowPhase",
    "ack_patch",
    "agent_patch",
    "decode_batch",
    "encode_batch",
    "message_properties",
    "parse_desired",
    "parse_reported",
]
