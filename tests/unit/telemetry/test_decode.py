"""`decode_rows` agrees with the wire contract's `decode_batch` on valid and mutated batches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.protocol.telemetry import (
    SCHEMA,
    EventRecord,
    HealthRecord,
    InferenceRecord,
    TelemetryBatch,
    TelemetryError,
    decode_batch,
    encode_batch,
)
from service.telemetry._decode import Decoded, decode_rows

ids = st.text(min_size=0, max_size=130)
ints = st.one_of(
    st.integers(-(2**31) - 2, 2**53 + 2),
    st.booleans(),
    st.floats(allow_nan=True),
    st.none(),
    st.just("7"),
)
scalars = st.one_of(ints, ids, st.floats(0, 1), st.just(float("inf")), st.just([]))
inference_row = st.lists(scalars, min_size=7, max_size=9).map(list) | st.tuples(
    st.sampled_from(["m4-0", "", "x" * 129]),
    st.just("kws"),
    st.sampled_from(["1", 2]),
    st.one_of(st.integers(-1, 2**53 + 1), st.just(True)),
    st.one_of(st.integers(-1, 60_000_001), st.just(1.5)),
    st.one_of(st.floats(-0.1, 1.1), st.integers(-1, 2), st.just(True), st.just(None)),
    st.one_of(st.none(), st.just("yes"), st.just(""), st.just(3)),
    st.one_of(st.none(), st.booleans(), st.just(0)),
).map(list)
health_row = st.lists(
    st.one_of(st.integers(-1, 70), st.just(True), st.just(2**53 + 1)), min_size=5, max_size=7
)
event_row = st.tuples(
    st.integers(-1, 5),
    st.sampled_from(["crash", "revert", "boom", 1]),
    st.one_of(st.none(), st.just("m4-0"), st.just("")),
    st.one_of(st.none(), st.just("r1"), st.just(5)),
    st.one_of(st.integers(-(2**31) - 1, 2**31 + 1), st.just(False)),
    st.one_of(st.just(""), st.just("x" * 513), st.none()),
).map(list)


@st.composite
def documents(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": draw(st.sampled_from([SCHEMA, SCHEMA, "tinyfleet.telemetry/2"])),
        "deviceId": draw(st.sampled_from(["dev-1", "dev-1", "dev-2"])),
        "seq": draw(st.one_of(st.integers(-1, 2**53 + 1), st.just(True), st.just("1"))),
        "release": draw(st.one_of(st.none(), st.just("rel-2"), st.just(""), st.just(1))),
    }
    flag = draw(st.integers(0, 3))
    if flag:
        doc["sampled"] = (True, False, draw(st.one_of(st.just(1), st.none(), st.just("true"))))[
            flag - 1
        ]
    for key, rows in (("inference", inference_row), ("health", health_row), ("events", event_row)):
        choice = draw(st.integers(0, 4))
        if choice == 0:
            continue  # missing: no rows
        doc[key] = draw(st.lists(rows, max_size=4)) if choice < 4 else draw(scalars)
    return doc


def _both(body: bytes) -> tuple[object, object]:
    try:
        expected: object = Decoded.from_batch(decode_batch(body, device_id="dev-1"))
    except TelemetryError as exc:
        expected = (exc.reason, exc.detail)
    try:
        got: object = decode_rows(body, device_id="dev-1")
    except TelemetryError as exc:
        got = (exc.reason, exc.detail)
    return expected, got


def _normal(value: object) -> object:
    if isinstance(value, Decoded):
        return (
            value.device_id,
            value.seq,
            value.release,
            *map(list, (value.inference, value.health, value.events)),
            value.sampled,
        )
    return value


@settings(max_examples=600, deadline=None)
@given(documents())
def test_fast_decoding_agrees_with_the_contract(document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    expected, got = _both(body)
    assert _normal(got) == _normal(expected)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff",
        b"[]",
        b"null",
        b'{"schema": "tinyfleet.telemetry/1"}',
        b"{" * 10,
        b"x" * 300_000,
    ],
    ids=["empty", "not-utf8", "array", "null", "no-device", "truncated", "oversized"],
)
def test_refusals_are_the_contracts(body: bytes) -> None:
    expected, got = _both(body)
    assert isinstance(expected, tuple) and got == expected


def test_a_valid_batch_decodes_to_the_same_rows() -> None:
    batch = TelemetryBatch(
        "dev-1",
        4,
        "rel-2",
        (InferenceRecord("m4-0", "kws", "2", 1, 250, 0.75, "yes", None),),
        (HealthRecord(1, 2, 3, 4, 5, 2),),
        (EventRecord(1, "crash", "m4-1", None, -3, "watchdog"),),
    )
    expected, got = _both(encode_batch(batch))
    assert isinstance(got, Decoded) and _normal(got) == _normal(expected)
    assert got.inference == [("m4-0", "kws", "2", 1, 250, 0.75, "yes", None)]
