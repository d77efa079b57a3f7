"""The pure half of ingest: rows and rollups from batches; the stored rollup codec; summaries."""

from __future__ import annotations

import random

import numpy as np
import pytest

from device_agent.protocol.telemetry import EventRecord, InferenceRecord, TelemetryBatch
from service.domain.rollups import CohortRollup, RollupError, merge_all
from service.telemetry._build import Accepted, build_rollups, build_rows
from service.telemetry._codec import decode, encode
from service.telemetry._decode import Decoded
from service.telemetry._summary import summarize

T0 = 1_795_000_000_000


def batch(device: str, seq: int, release: str | None, rng: random.Random) -> TelemetryBatch:
    rows = tuple(
        InferenceRecord(
            rng.choice(["m4-0", "m4-1"]),
            "kws",
            "2",
            T0 + i,
            rng.randrange(0, 60_000_000),
            round(rng.random(), 5),
            rng.choice([None, "yes", "no"]),
            rng.choice([None, True, False]),
        )
        for i in range(rng.randrange(0, 30))
    )
    events = tuple(
        EventRecord(T0, kind, "m4-0", None, code)
        for kind, code in [("crash", 1), ("revert", 0), ("install", 0), ("reject", 2)]
        if rng.random() < 0.3
    )
    return TelemetryBatch(device, seq, release, rows, (), events)


def accepted(rng: random.Random, count: int = 40) -> list[Accepted]:
    return [
        Accepted(
            str(n % 3),
            n,
            T0 + rng.randrange(0, 300_000),
            f"d{n % 7}:{n}",
            Decoded.from_batch(batch(f"d{n % 7}", n, rng.choice(["r1", "r2", None]), rng)),
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_rollups_equal_the_rollup_of_each_devices_records(seed: int) -> None:
    rng = random.Random(seed)
    items = accepted(rng)
    groups = {"d1": ("g1",), "d2": ("g1", "g2")}
    rollups = build_rollups(items, lambda d: groups.get(d, ()), 60_000)
    for group in ("", "g1", "g2"):
        for release in ("r1", "r2", ""):
            mine = [
                i
                for i in items
                if (i.batch.release or "") == release
                and (group == "" or group in groups.get(i.batch.device_id, ()))
            ]
            expected = merge_all(
                CohortRollup.from_records(
                    i.batch.device_id,
                    [InferenceRecord(*r) for r in i.batch.inference],
                    [EventRecord(*e) for e in i.batch.events],
                )
                for i in mine
            )
            got = merge_all(r for k, r in rollups.items() if k[0] == group and k[1] == release)
            assert got == expected, (group, release)


def test_rows_keep_every_record_in_column_order() -> None:
    items = accepted(random.Random(1))
    rows = build_rows(items)
    assert len(rows.inference) == sum(len(i.batch.inference) for i in items)
    assert len(rows.events) == sum(len(i.batch.events) for i in items)
    first = next(i for i in items if i.batch.inference)
    assert rows.inference[0] == (
        first.batch.device_id,
        first.batch.release or "",
        *first.batch.inference[0],
        first.enqueued_ms,
    )


@pytest.mark.parametrize("seed", range(5))
def test_codec_round_trips_exactly(seed: int) -> None:
    for rollup in build_rollups(accepted(random.Random(seed)), lambda d: (), 60_000).values():
        assert decode(*encode(rollup)) == rollup
    assert decode(*encode(CohortRollup.empty())) == CohortRollup.empty()


def _some_rollup() -> CohortRollup:
    return CohortRollup.from_columns(["d"], np.array([5, 500, 5000]), np.array([0.1, 0.5, 0.9]))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d, lat, sc: ({**d, "layout": "tinyfleet.rollup/0"}, lat, sc),
        lambda d, lat, sc: (d, lat[:-1], sc),
        lambda d, lat, sc: (d, np.array([[10**6, 3]], "<i8").tobytes(), sc),
        lambda d, lat, sc: (d, np.array([[1, -3]], "<i8").tobytes(), sc),
        lambda d, lat, sc: ({**d, "inferences": 4}, lat, sc),
        lambda d, lat, sc: ({k: v for k, v in d.items() if k != "devices"}, lat, sc),
    ],
    ids=["layout", "truncated", "bin-out-of-range", "negative", "sum-mismatch", "missing-field"],
)
def test_codec_refuses_what_encode_cannot_write(tamper) -> None:
    with pytest.raises(RollupError):
        decode(*tamper(*encode(_some_rollup())))


def _keyed(rollups: dict) -> list:
    names = ("group_id", "release_id", "core", "model_id", "model_version", "bucket_ms")
    return [(dict(zip(names, k[:6], strict=True)), r) for k, r in rollups.items() if k[0] == ""]


def test_summary_merges_partitions_and_buckets_and_attaches_errors() -> None:
    rows = tuple(
        InferenceRecord("m4-0", "kws", "2", T0, 1000 * (i + 1), 0.5, "yes") for i in range(3)
    )
    events = (
        EventRecord(T0, "reject", "m4-0", "r2", 2),
        EventRecord(T0, "crash", "m4-0", None, 1),
        EventRecord(T0, "reject", "m4-1", "r2", 2),
    )
    items = [
        Accepted(
            "0", 0, T0, "a:0", Decoded.from_batch(TelemetryBatch("a", 0, "r2", rows, (), events))
        ),
        Accepted(
            "1", 0, T0 + 61_000, "b:0", Decoded.from_batch(TelemetryBatch("b", 0, "r2", rows))
        ),
    ]
    keyed = _keyed(build_rollups(items, lambda d: (), 60_000))
    [hour] = summarize(keyed, "hour")
    assert (hour["count"], hour["errors"], hour["devices"], hour["core"]) == (6, 1, 2, "m4-0")
    assert hour["labels"] == {"yes": 6} and hour["latency_mean_us"] == 2000.0
    minutes = summarize(keyed, "minute")
    assert [(m["count"], m["errors"]) for m in minutes] == [(3, 1), (3, 0)]
