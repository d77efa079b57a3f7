"""Cohort rollups: exact merging, accuracy of the histogram figures, storage, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.protocol.telemetry import EventRecord, InferenceRecord
from service.domain.errors import DomainError
from service.domain.rollups import LATENCY_EDGES_US, CohortRollup, RollupError, merge_all

LABELS = ("a", "b", "c")

records = st.builds(
    InferenceRecord,
    core=st.just("m4-0"),
    model_id=st.just("kws"),
    model_version=st.just("2"),
    ts_ms=st.integers(0, 10**6),
    latency_us=st.integers(0, 60_000_000),
    score=st.floats(0.0, 1.0).map(lambda s: round(s, 5)),
    label=st.sampled_from((None, *LABELS)),
    anomaly=st.sampled_from((None, True, False)),
)
events = st.builds(
    EventRecord,
    ts_ms=st.integers(0, 10**6),
    kind=st.sampled_from(
        ("install", "activate", "confirm", "revert", "selftest", "crash", "reject")
    ),
    core=st.just("m4-0"),
    release_id=st.just("r2"),
    code=st.integers(-2, 2),
)
device_batches = st.lists(
    st.tuples(
        st.sampled_from(("d1", "d2", "d3")),
        st.lists(records, max_size=12),
        st.lists(events, max_size=3),
    ),
    max_size=6,
)


def _rollup(batches: list[tuple[str, list[InferenceRecord], list[EventRecord]]]) -> CohortRollup:
    return merge_all(CohortRollup.from_records(d, rows, evs) for d, rows, evs in batches)


@settings(max_examples=120, deadline=None)
@given(device_batches, device_batches)
def test_merge_equals_rollup_of_the_concatenation(
    first: list[tuple[str, list[InferenceRecord], list[EventRecord]]],
    second: list[tuple[str, list[InferenceRecord], list[EventRecord]]],
) -> None:
    merged = _rollup(first).merge(_rollup(second))
    assert merged == _rollup(first + second)
    assert merged == _rollup(second).merge(_rollup(first))
    assert merged.merge(CohortRollup.empty()) == merged


@settings(max_examples=60, deadline=None)
@given(device_batches)
def test_rollup_matches_the_rows(
    batches: list[tuple[str, list[InferenceRecord], list[EventRecord]]],
) -> None:
    rollup = _rollup(batches)
    rows = [r for _, rs, _ in batches for r in rs]
    assert rollup.inferences == len(rows) == int(rollup.score_counts.sum())
    assert rollup.latency_sum_us == sum(r.latency_us for r in rows)
    assert rollup.score_sum_units == sum(round(r.score * 100_000) for r in rows)
    assert rollup.anomalies == sum(r.anomaly is True for r in rows)
    assert rollup.anomaly_reported == sum(r.anomaly is not None for r in rows)
    for label in LABELS:
        assert rollup.label_counts.get(label, 0) == sum(r.label == label for r in rows)
    crashed = {d for d, _, evs in batches if any(e.kind == "crash" for e in evs)}
    assert rollup.devices_crashed == crashed
    assert rollup.devices == {d for d, _, _ in batches}


@settings(max_examples=60, deadline=None)
@given(device_batches)
def test_stored_rollup_round_trips_through_json(
    batches: list[tuple[str, list[InferenceRecord], list[EventRecord]]],
) -> None:
    rollup = _rollup(batches)
    stored = json.loads(json.dumps(rollup.to_dict(), allow_nan=False))
    assert CohortRollup.from_dict(stored) == rollup


def test_histogram_figures_are_within_one_bin_of_the_exact_values() -> None:
    rng = np.random.default_rng(11)
    latency = rng.lognormal(np.log(5000), 0.6, 50_000).astype(np.int64)
    scores = rng.beta(5, 2, 50_000)
    rollup = CohortRollup.from_columns(["d"], latency, scores)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latency, q))
        assert rollup.latency_quantile_us(q) == pytest.approx(exact, rel=0.022)
    assert rollup.latency_mean_us == pytest.approx(latency.mean(), rel=1e-12)
    assert rollup.score_mean == pytest.approx(scores.mean(), abs=1e-5)


def test_latency_bins_are_exact_for_small_values_and_cover_sixty_seconds() -> None:
    assert list(LATENCY_EDGES_US[:51]) == list(range(51))
    assert LATENCY_EDGES_US[-1] > 60_000_000
    lower = LATENCY_EDGES_US[:-1].clip(1)
    # 2^(1/32) - 1 = 2.19 % wide, give or take the rounding of the edges to whole microseconds
    assert np.all(np.diff(LATENCY_EDGES_US) / lower <= 0.02190 + 1.0 / lower)
    assert np.all(np.diff(LATENCY_EDGES_US)[lower > 10_000] / lower[lower > 10_000] < 0.0220)


def test_rows_without_labels_or_flags_count_as_such() -> None:
    rows = [InferenceRecord("m4-0", "kws", "2", 1, 100, 0.5)]
    rollup = CohortRollup.from_records("d1", rows)
    assert rollup.labels == () and rollup.anomaly_reported == 0 and rollup.anomaly_rate == 0.0


def test_errors_reverts_and_crashes_are_counted_per_event_and_per_device() -> None:
    evs = [
        EventRecord(1, "install", "m4-0", "r2", 0),
        EventRecord(2, "selftest", "m4-0", "r2", 5),
        EventRecord(3, "reject", "m4-0", "r2", 0),
        EventRecord(4, "revert", "m4-0", "r2", 1),
        EventRecord(5, "revert", "m4-0", "r2", 1),
    ]
    rollup = CohortRollup.from_records("d1", events=evs).merge(CohortRollup.from_records("d2"))
    assert (rollup.errors, rollup.reverts, rollup.crashes) == (2, 2, 0)
    assert rollup.devices_with_error == rollup.devices_reverted == {"d1"}
    assert rollup.devices == {"d1", "d2"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency_us": [1.5], "scores": [0.5]}, "whole microseconds"),
        ({"latency_us": [-1], "scores": [0.5]}, "latency must be in"),
        ({"latency_us": [60_000_001], "scores": [0.5]}, "latency must be in"),
        ({"latency_us": [1], "scores": [1.5]}, "score must be"),
        ({"latency_us": [1], "scores": [float("nan")]}, "score must be"),
        ({"latency_us": [1, 2], "scores": [0.5]}, "one length"),
        ({"latency_us": [1], "scores": [0.5], "label_codes": [3]}, "label codes"),
        ({"latency_us": [1], "scores": [0.5], "anomaly": [1]}, "boolean"),
    ],
    ids=[
        "fractional-latency",
        "negative-latency",
        "latency-over-schema",
        "score-above-one",
        "nan-score",
        "ragged-columns",
        "unknown-label-code",
        "integer-anomaly",
    ],
)
def test_bad_columns_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RollupError, match=message):
        CohortRollup.from_columns(["d"], label_names=LABELS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": "tinyfleet.rollup/0"}, "layout"),
        ({"latency_counts": [[10_000, 1]]}, "outside"),
        ({"latency_counts": [[-1, 1]]}, "outside"),
        ({"inferences": 5}, "add up"),
        ({"labels": "abc"}, "malformed"),
    ],
    ids=["other-layout", "bin-out-of-range", "negative-bin", "counts-disagree", "bad-labels"],
)
def test_bad_stored_rollups_are_refused(change: dict[str, object], message: str) -> None:
    stored = CohortRollup.from_records("d1", [InferenceRecord("m4-0", "k", "1", 1, 9, 0.5)])
    document = {**stored.to_dict(), **change}
    with pytest.raises(RollupError, match=message) as raised:
        CohortRollup.from_dict(document)
    assert isinstance(raised.value, DomainError)


def test_a_rollup_cannot_be_changed_in_place() -> None:
    rollup = CohortRollup.from_records("d1", [InferenceRecord("m4-0", "k", "1", 1, 9, 0.5)])
    with pytest.raises(ValueError, match="read-only"):
        rollup.latency_counts[0] = 7
