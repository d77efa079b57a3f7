"""The device-to-cloud contract: twin shapes and telemetry batches, including hostile input."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.protocol import (
    SCHEMA,
    AgentState,
    BatchBuilder,
    CoreReport,
    CoreState,
    EventRecord,
    HealthRecord,
    InferenceRecord,
    ReportedAgent,
    ResultReport,
    TelemetryError,
    TwinError,
    WorkflowAction,
    WorkflowPhase,
    ack_patch,
    agent_patch,
    decode_batch,
    encode_batch,
    message_properties,
    parse_desired,
    parse_reported,
)
from device_agent.protocol.telemetry import MAX_BATCH_BYTES


def _desired(**service: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workflow": {"action": 3, "id": "wf-1"},
        "repository": {
            "imageUrl": "https://repo.example/image/metadata/",
            "directorUrl": "https://repo.example/director/devices/d1/metadata/",
            "targetsUrl": "https://repo.example/image/targets/",
        },
    }
    base.update(service)
    return {"$version": 7, "tinyfleet": {"__t": "c", "service": base}}


def test_deploy_workflow_parses() -> None:
    parsed = parse_desired(_desired())
    assert parsed is not None
    assert (parsed.version, parsed.action, parsed.workflow_id) == (7, WorkflowAction.DEPLOY, "wf-1")
    assert parsed.telemetry_interval_s == 60


def test_no_component_means_nothing_desired() -> None:
    assert parse_desired({"$version": 2, "other": {}}) is None


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "malformed"),
        ({"tinyfleet": {}}, "malformed"),
        (_desired(workflow={"action": 0, "id": "x"}), "bad-action"),
        (_desired(workflow={"action": True, "id": "x"}), "bad-action"),
        (_desired(workflow={"action": 3, "id": ""}), "malformed"),
        (_desired(workflow={"action": 3, "id": "x" * 200}), "malformed"),
        (_desired(repository={"imageUrl": "ftp://x/"}), "bad-url"),
        (_desired(repository={"imageUrl": "https://x/no-slash"}), "bad-url"),
        (_desired(repository={}), "malformed"),
        (_desired(repository={"query": "?sig=1"}), "malformed"),
        (_desired(telemetry={"intervalSeconds": 0}), "malformed"),
    ],
    ids=[
        "not-object",
        "no-version",
        "unknown-action",
        "bool-action",
        "empty-id",
        "long-id",
        "bad-scheme",
        "url-without-slash",
        "deploy-without-urls",
        "query-with-question-mark",
        "zero-interval",
    ],
)
def test_bad_desired_documents_are_refused_with_a_reason(document: Any, reason: str) -> None:
    with pytest.raises(TwinError) as caught:
        parse_desired(document)
    assert caught.value.reason == reason


def test_cancel_needs_no_repository() -> None:
    parsed = parse_desired(_desired(workflow={"action": 255, "id": "wf-1"}, repository=None))
    assert parsed is not None and parsed.action is WorkflowAction.CANCEL


def test_reported_patch_and_acknowledgement_shapes() -> None:
    agent = ReportedAgent(
        agent_version="0.1.0",
        profile="mt3620",
        hardware_id="mt3620",
        state=AgentState.FAILED,
        workflow_action=WorkflowAction.DEPLOY,
        workflow_id="wf-1",
        installed_release="r1",
        last_result=ResultReport(1, "target-hash", "models/kws: sha256 mismatch", "download"),
        cores={"m4-0": CoreReport("1.0.0", CoreState.RUNNING, "A", "kws", "1.0.0", "ab" * 32)},
    )
    reported = json.loads(agent_patch(agent))["tinyfleet"]
    assert reported["__t"] == "c"
    assert reported["agent"]["state"] == "failed"
    assert reported["agent"]["lastResult"]["reason"] == "target-hash"
    assert reported["agent"]["cores"]["m4-0"]["activeModel"]["modelId"] == "kws"
    desired = parse_desired(_desired())
    assert desired is not None
    ack = json.loads(ack_patch(desired))["tinyfleet"]["service"]
    assert (ack["ac"], ack["av"], ack["value"]["workflow"]["id"]) == (200, 7, "wf-1")


def _batch_records() -> list[Any]:
    return [
        InferenceRecord("m4-0", "kws", "2.0.0", 1_700_000_000_000, 830, 0.9731, "yes", None),
        InferenceRecord("m4-1", "vib", "1.0.0", 1_700_000_000_100, 410, 0.12, None, False),
        HealthRecord(1_700_000_000_200, 180_000, 3600, 2, 0, 2),
        EventRecord(1_700_000_000_300, "revert", "m4-1", "r2", 7, "selftest-failed"),
    ]


def test_batch_round_trip_and_message_properties() -> None:
    builder = BatchBuilder("dev-1", 42, "r2")
    for record in _batch_records():
        assert builder.add(record)
    batch = builder.build()
    decoded = decode_batch(encode_batch(batch), device_id="dev-1")
    assert decoded == batch
    assert message_properties(batch)["$.mid"] == "dev-1:42"


def test_builder_stops_before_the_size_limit() -> None:
    builder = BatchBuilder("dev-1", 1, "r1")
    record = InferenceRecord("m4-0", "kws", "2.0.0", 1_700_000_000_000, 830, 0.5, "yes", None)
    while builder.add(record):
        pass
    assert len(encode_batch(builder.build())) <= MAX_BATCH_BYTES
    assert len(builder) > 1000


def _body(**changes: Any) -> bytes:
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "deviceId": "dev-1",
        "seq": 1,
        "release": None,
        "inference": [],
        "health": [],
        "events": [],
    }
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "malformed"),
        (b"[1,2]", "malformed"),
        (b" " * (MAX_BATCH_BYTES + 1), "oversized"),
        (_body(schema="tinyfleet.telemetry/9"), "unknown-schema"),
        (_body(deviceId="dev-2"), "wrong-device"),
        (_body(seq=-1), "bad-record"),
        (_body(inference=[["m4-0", "kws", "1", 1, 1, 1.5, None, None]]), "bad-record"),
        (_body(inference=[["m4-0", "kws", "1", 1, 1, 0.5, None]]), "bad-record"),
        (_body(events=[[1, "explode", None, None, 0, ""]]), "bad-record"),
        (_body(health=[[1, 2, 3, 4, 5, True]]), "bad-record"),
        (b'{"schema": "tinyfleet.telemetry/1", "deviceId": "dev-1", "seq": NaN}', "bad-record"),
    ],
    ids=[
        "not-utf8",
        "not-object",
        "oversized",
        "unknown-schema",
        "claims-other-device",
        "negative-seq",
        "score-out-of-range",
        "short-row",
        "unknown-event",
        "bool-as-int",
        "nan",
    ],
)
def test_bad_telemetry_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(TelemetryError) as caught:
        decode_batch(body, device_id="dev-1")
    assert caught.value.reason == reason


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_decoder_never_fails_with_anything_but_telemetry_error(body: bytes) -> None:
    with contextlib.suppress(TelemetryError):
        decode_batch(body, device_id="dev-1")


@settings(max_examples=200)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_twin_parser_never_fails_with_anything_but_twin_error(document: Any) -> None:
    for candidate in (document, {"$version": 1, "tinyfleet": {"service": document}}):
        with contextlib.suppress(TwinError):
            parse_desired(candidate)


def _reported_agent() -> ReportedAgent:
    return ReportedAgent(
        agent_version="0.1.0",
        profile="mt3620",
        hardware_id="mt3620",
        state=AgentState.DEPLOYING,
        workflow_action=WorkflowAction.CANCEL,
        workflow_id="wf-2",
        installed_release="r1",
        last_result=ResultReport(0, "", "", "check"),
        cores={
            "m4-0": CoreReport(
                "1.0.0", CoreState.SELFTEST, "B", "kws", "2.0.0", "ab" * 32, None, 10, 20, 3
            ),
            "m4-1": CoreReport("unknown", CoreState.OFFLINE),
        },
        phase=WorkflowPhase.TRIAL,
        phase_workflow_id="wf-1",
        phase_reason="",
    )


def test_the_reported_document_parses_back_to_the_value_the_agent_wrote() -> None:
    agent = _reported_agent()
    written = json.loads(agent_patch(agent))["tinyfleet"]["agent"]
    assert parse_reported(written) == agent
    assert written["phase"] == {"name": "trial", "workflowId": "wf-1", "reason": ""}
    assert written["cores"]["m4-0"]["heartbeatAtMs"] == 20


def _mutated(change: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(agent_patch(_reported_agent()))["tinyfleet"]["agent"]
    change(document)
    return document


_BAD_REPORTED = [
    ("not-an-object", lambda d: d.clear() or d.update(x=[1]), None),
    ("unknown-phase", lambda d: d["phase"].update(name="installing"), "phase"),
    ("unknown-state", lambda d: d.update(state="busy"), "state"),
    ("unknown-core-state", lambda d: d["cores"]["m4-0"].update(state="dancing"), "core state"),
    ("negative-heartbeat", lambda d: d["cores"]["m4-0"].update(heartbeatAtMs=-1), "heartbeatAt"),
    ("bool-inferences", lambda d: d["cores"]["m4-0"].update(inferences=True), "inferences"),
    ("cores-not-object", lambda d: d.update(cores=[1]), "cores"),
    ("long-workflow-id", lambda d: d["phase"].update(workflowId="w" * 129), "workflowId"),
    ("bad-action", lambda d: d["workflow"].update(action=7), "action"),
]


@pytest.mark.parametrize(
    ("change", "field"), [row[1:] for row in _BAD_REPORTED], ids=[row[0] for row in _BAD_REPORTED]
)
def test_a_malformed_reported_document_is_refused_naming_the_field(
    change: Any, field: str | None
) -> None:
    document = _mutated(change)
    if field is None:
        document = ["not", "an", "object"]  # type: ignore[assignment]
    with pytest.raises(TwinError) as caught:
        parse_reported(document)
    assert caught.value.reason == "bad-reported"
    assert field is None or field in caught.value.detail
