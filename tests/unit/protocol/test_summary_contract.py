"""The summary wire contract: buckets are the rollup layout's, merging is exact, commutative and
associative, quantiles from merged sketches are within one bucket (2.2 %), bad summaries are refused
with a specific reason."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.protocol.summary import (
    LATENCY_EDGES_US,
    MAX_LATENCY_US,
    SummaryAccumulator,
    SummaryBatch,
    SummaryError,
    SummaryRecord,
    decode_summaries,
    encode_summaries,
)
from device_agent.protocol.telemetry import InferenceRecord

RELATIVE_ACCURACY = 0.022  # one bucket above 46 us; exact below

latencies = st.integers(min_value=0, max_value=MAX_LATENCY_US)
records = st.builds(
    InferenceRecord,
    core=st.just("m4-0"),
    model_id=st.just("kws"),
    model_version=st.just("1.0.0"),
    ts_ms=st.integers(0, 10**9),
    latency_us=latencies,
    score=st.floats(0.0, 1.0),
    label=st.sampled_from([None, "yes", "no", "up"]),
    anomaly=st.sampled_from([None, True, False]),
)


def _summary(rows: list[InferenceRecord], start: int = 0) -> SummaryRecord:
    acc = SummaryAccumulator("m4-0", "kws", "1.0.0", start, 60_000)
    for row in rows:
        acc.add(row)
    return acc.build()


def _exact_quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_edges_are_the_rollup_layouts() -> None:
    from service.domain.rollups import LATENCY_EDGES_US as ROLLUP_EDGES

    assert tuple(int(e) for e in ROLLUP_EDGES) == LATENCY_EDGES_US
    assert LATENCY_EDGES_US[-1] > MAX_LATENCY_US


@given(
    st.lists(records, max_size=30), st.lists(records, max_size=30), st.lists(records, max_size=30)
)
@settings(max_examples=60, deadline=None)
def test_merge_is_exact_commutative_and_associative(
    a: list[InferenceRecord], b: list[InferenceRecord], c: list[InferenceRecord]
) -> None:
    sa, sb, sc = _summary(a), _summary(b), _summary(c)
    assert sa.merge(sb) == sb.merge(sa)
    assert sa.merge(sb).merge(sc) == sa.merge(sb.merge(sc))
    assert sa.merge(sb).merge(sc) == _summary(a + b + c)


@given(
    st.lists(st.lists(latencies, min_size=1, max_size=40), min_size=1, max_size=5),
    st.sampled_from([0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]),
)
@settings(max_examples=100, deadline=None)
def test_merged_quantile_within_stated_accuracy(parts: list[list[int]], q: float) -> None:
    rows = [
        [InferenceRecord("m4-0", "kws", "1.0.0", 0, lat, 0.5) for lat in part] for part in parts
    ]
    merged = _summary(rows[0])
    for part in rows[1:]:
        merged = merged.merge(_summary(part))
    exact = _exact_quantile([lat for part in parts for lat in part], q)
    estimate = merged.latency_quantile_us(q)
    assert estimate <= exact
    assert exact - estimate <= max(RELATIVE_ACCURACY * exact, 0.0) + (0 if exact < 46 else 1)


def test_sketch_size_is_bounded() -> None:
    rng = random.Random(7)
    rows = [
        InferenceRecord("m4-0", "kws", "1.0.0", 0, rng.randint(0, MAX_LATENCY_US), rng.random())
        for _ in range(20_000)
    ]
    summary = _summary(rows)
    assert len(summary.latency_bins) <= len(LATENCY_EDGES_US) - 1
    assert len(summary.score_bins) <= 1000
    body = encode_summaries(SummaryBatch("dev-1", 1, "r1", (summary,)))
    assert decode_summaries(body, device_id="dev-1").summaries == (summary,)


@given(st.lists(records, min_size=1, max_size=40))
@settings(max_examples=40, deadline=None)
def test_round_trip(rows: list[InferenceRecord]) -> None:
    batch = SummaryBatch("dev-1", 3, None, (_summary(rows, 60_000),))
    assert decode_summaries(encode_summaries(batch), device_id="dev-1") == batch


def _row() -> list[object]:
    rows = [
        InferenceRecord("m4-0", "kws", "1.0.0", 0, 1000 + i, 0.25, "yes", False) for i in range(4)
    ]
    return _summary(rows).row()


def _body(**changes: object) -> bytes:
    document: dict[str, object] = {
        "schema": "tinyfleet.summary/1",
        "deviceId": "dev-1",
        "seq": 1,
        "release": "r1",
        "summaries": [_row()],
    }
    document.update(changes)
    return json.dumps(document).encode()


def _with(column: int, value: object) -> bytes:
    row = _row()
    row[column] = value
    return _body(summaries=[row])


BAD = [
    ("not-json", b"{", "malformed"),
    ("not-object", b"[]", "malformed"),
    ("oversized", b" " * 250_001, "oversized"),
    ("unknown-schema", _body(schema="tinyfleet.summary/0"), "unknown-schema"),
    ("wrong-device", _body(deviceId="dev-2"), "wrong-device"),
    ("summaries-not-list", _body(summaries={}), "bad-summary"),
    ("short-row", _body(summaries=[_row()[:12]]), "bad-summary"),
    ("zero-count", _with(5, 0), "bad-summary"),
    ("count-not-buckets", _with(5, 5), "bad-summary"),
    ("bool-count", _with(5, True), "bad-summary"),
    ("zero-interval", _with(4, 0), "bad-summary"),
    ("latency-sum-outside-buckets", _with(6, 10), "bad-summary"),
    ("score-sum-outside-buckets", _with(8, 99_000), "bad-summary"),
    ("bin-out-of-range", _with(7, [[829, 4]]), "bad-summary"),
    ("bins-not-ascending", _with(9, [[250, 2], [249, 2]]), "bad-summary"),
    ("zero-bucket-count", _with(9, [[250, 4], [251, 0]]), "bad-summary"),
    ("anomalies-over-reported", _with(10, 5), "bad-summary"),
    ("labels-over-count", _with(12, [["yes", 9]]), "bad-summary"),
    ("labels-unsorted", _with(12, [["yes", 1], ["no", 1]]), "bad-summary"),
    ("empty-core", _with(0, ""), "bad-summary"),
    ("duplicate-key", _body(summaries=[_row(), _row()]), "bad-summary"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [(b, r) for _, b, r in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_summaries_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(SummaryError) as caught:
        decode_summaries(body, device_id="dev-1")
    assert caught.value.reason == reason


def test_merge_of_other_models_refused() -> None:
    a = _summary([InferenceRecord("m4-0", "kws", "1.0.0", 0, 10, 0.5)])
    b = SummaryAccumulator("m4-0", "kws", "2.0.0", 0, 60_000)
    b.add(InferenceRecord("m4-0", "kws", "2.0.0", 0, 10, 0.5))
    with pytest.raises(SummaryError, match="one core and model"):
        a.merge(b.build())
