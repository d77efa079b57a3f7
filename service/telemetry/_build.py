"""From decoded batches to table rows and rollups: the pure half of one ingest commit.

Invariants:
- Pure: no I/O, no clock; the same batches give the same rows and rollups.
- Every inference record lands in exactly one raw row and in the rollup of each of its
  device's groups and of the fleet (group ""); every batch adds its device to the device row
  (core = model id = model version = "") of each of those groups, with its events.
- Every batch lands in its own device's rollups too (`build_device_rollups`), keyed like the
  group rollups with the device id in place of the group.
- Every summary (`tinyfleet.summary/1`) lands in the same rollups as the raw rows it stands for
  would, merged exactly; summaries add no raw rows.
- A batch marked `sampled` (raw rows the device also summarised) adds its inference rows to the
  raw table only, never to a rollup, so an inference is counted once whichever way it came.
- Rollups are keyed by the hub's enqueue time, bucketed, and by partition (see `_schema.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import numpy as np

from service.domain.rollups import CohortRollup, merge_all
from service.telemetry._decode import Decoded, InferenceRow
from service.telemetry._from_summary import rollup_from_summary

__all__ = [
    "Accepted",
    "RollupKey",
    "Rows",
    "build_all_rollups",
    "build_device_rollups",
    "build_rollups",
    "build_rows",
]

FLEET = ""
# (group, release, core, model id, model version, bucket start ms, partition)
RollupKey: TypeAlias = tuple[str, str, str, str, str, int, str]
GroupsOf: TypeAlias = Callable[[str], Sequence[str]]
_ERROR_FREE = ("revert", "crash")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid, new batch and where it came from."""

    partition: str
    sequence: int
    enqueued_ms: int
    message_id: str
    batch: Decoded


@dataclass
class Rows:
    inference: list[tuple[Any, ...]] = field(default_factory=list)
    health: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.inference) + len(self.health) + len(self.events)


def build_rows(accepted: Iterable[Accepted]) -> Rows:
    """Raw rows in the column order of `_schema.py`'s tables."""
    rows = Rows()
    inference, health, events = rows.inference, rows.health, rows.events
    for item in accepted:
        batch, at = item.batch, item.enqueued_ms
        device, release = batch.device_id, batch.release or ""
        inference.extend([(device, release, *r, at) for r in batch.inference])
        health.extend([(device, *h, at) for h in batch.health])
        events.extend([(device, release, *e, at) for e in batch.events])
    return rows


@dataclass
class _Columns:
    devices: set[str] = field(default_factory=set)
    latency: list[int] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    anomaly: list[bool | None] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    reverts: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, int] = field(default_factory=dict)
    summarised: list[CohortRollup] = field(default_factory=list)  # from device summaries

    def rollup(self) -> CohortRollup:
        names = sorted({label for label in self.label if label is not None})
        index = {name: i for i, name in enumerate(names)}
        base = CohortRollup.from_columns(
            self.devices,
            np.array(self.latency, dtype=np.int64),
            np.array(self.score, dtype=np.float64),
            label_names=names,
            label_codes=np.array(
                [-1 if label is None else index[label] for label in self.label], dtype=np.int64
            ),
        )
        reported = [flag for flag in self.anomaly if flag is not None]
        rows = replace(
            base,
            anomalies=sum(reported),
            anomaly_reported=len(reported),
            devices_with_error=frozenset(self.errors),
            devices_reverted=frozenset(self.reverts),
            devices_crashed=frozenset(self.crashes),
            errors=sum(self.errors.values()),
            reverts=sum(self.reverts.values()),
            crashes=sum(self.crashes.values()),
        )
        return merge_all([rows, *self.summarised]) if self.summarised else rows


def _is_error(kind: str, code: int) -> bool:
    return kind == "reject" or (kind not in _ERROR_FREE and code != 0)


_ColumnKey: TypeAlias = tuple[tuple[str, ...], str, str, str, str, int, str]


def _collect(
    accepted: Iterable[Accepted], owners_of: Callable[[str], tuple[str, ...]], bucket_ms: int
) -> dict[_ColumnKey, _Columns]:
    """The columns of each (owners, release, core, model id, model version, bucket, partition):
    `owners_of(device)` names the rollups a device's rows go to (its groups, or itself)."""
    columns: dict[_ColumnKey, _Columns] = {}
    for item in accepted:
        batch = item.batch
        device, release = batch.device_id, batch.release or ""
        owners = owners_of(device)
        bucket = item.enqueued_ms // bucket_ms * bucket_ms
        presence = (owners, release, "", "", "", bucket, item.partition)
        cols = columns.get(presence) or columns.setdefault(presence, _Columns())
        cols.devices.add(device)
        for _ts, kind, core, _release, code, _reason in batch.events:
            key = (owners, release, core or "", "", "", bucket, item.partition)
            ev = columns.get(key) or columns.setdefault(key, _Columns())
            ev.devices.add(device)
            target = (
                ev.reverts
                if kind == "revert"
                else ev.crashes
                if kind == "crash"
                else ev.errors
                if _is_error(kind, code)
                else None
            )
            if target is not None:
                target[device] = target.get(device, 0) + 1
        by_model: dict[tuple[str, str, str], list[InferenceRow]] = {}
        for r in () if batch.sampled else batch.inference:
            model_key = (r[0], r[1], r[2])
            rows = by_model.get(model_key)
            if rows is None:
                by_model[model_key] = [r]
            else:
                rows.append(r)
        for (core, model_id, version), rows in by_model.items():
            key = (owners, release, core, model_id, version, bucket, item.partition)
            cols = columns.get(key) or columns.setdefault(key, _Columns())
            cols.devices.add(device)
            _, _, _, _, latency, score, label, anomaly = zip(*rows, strict=True)
            cols.latency.extend(latency)
            cols.score.extend(score)
            cols.label.extend(label)
            cols.anomaly.extend(anomaly)
        for summary in batch.summaries:
            model = (summary.core, summary.model_id, summary.model_version)
            cols = columns.setdefault((owners, release, *model, bucket, item.partition), _Columns())
            cols.devices.add(device)
            cols.summarised.append(rollup_from_summary(device, summary))
    return columns


def _keyed(owner: str, rest: Sequence[Any]) -> RollupKey:
    release, core, model_id, version, bucket, partition = rest
    return (owner, release, core, model_id, version, bucket, partition)


def _absorb(into: _Columns, cols: _Columns) -> None:
    into.devices |= cols.devices
    into.latency.extend(cols.latency)
    into.score.extend(cols.score)
    into.label.extend(cols.label)
    into.anomaly.extend(cols.anomaly)
    into.summarised.extend(cols.summarised)
    for mine, theirs in (
        (into.errors, cols.errors),
        (into.reverts, cols.reverts),
        (into.crashes, cols.crashes),
    ):
        for device, n in theirs.items():
            mine[device] = mine.get(device, 0) + n


def build_all_rollups(
    accepted: Iterable[Accepted], groups_of: GroupsOf, bucket_ms: int, device_bucket_ms: int
) -> tuple[dict[RollupKey, CohortRollup], dict[RollupKey, CohortRollup]]:
    """`build_rollups` and `build_device_rollups` (in `device_bucket_ms` buckets, a divisor of
    `bucket_ms`) in one pass over the rows: the group columns are the devices' columns joined."""
    if bucket_ms % device_bucket_ms:
        raise ValueError(f"device buckets of {device_bucket_ms} ms do not divide {bucket_ms} ms")
    by_device = _collect(accepted, lambda d: (d,), device_bucket_ms)
    devices = {
        _keyed(owners[0], rest): cols.rollup() for (owners, *rest), cols in by_device.items()
    }
    group_cache: dict[str, tuple[str, ...]] = {}
    joined: dict[_ColumnKey, _Columns] = {}
    for (owners, release, core, model_id, version, bucket, partition), cols in by_device.items():
        device = owners[0]
        groups = group_cache.get(device)
        if groups is None:
            groups = group_cache[device] = (FLEET, *sorted(set(groups_of(device)) - {FLEET}))
        key = (groups, release, core, model_id, version, bucket // bucket_ms * bucket_ms, partition)
        _absorb(joined.get(key) or joined.setdefault(key, _Columns()), cols)
    fanned: dict[RollupKey, list[CohortRollup]] = {}
    for (owners, *rest), cols in joined.items():
        rollup = cols.rollup()
        for group in owners:
            fanned.setdefault(_keyed(group, rest), []).append(rollup)
    groups_rollups = {
        k: parts[0] if len(parts) == 1 else merge_all(parts) for k, parts in fanned.items()
    }
    return groups_rollups, devices


def build_rollups(
    accepted: Iterable[Accepted], groups_of: GroupsOf, bucket_ms: int
) -> dict[RollupKey, CohortRollup]:
    """The rollup of each key's rows in these batches (to be merged with the stored ones)."""
    return build_all_rollups(accepted, groups_of, bucket_ms, bucket_ms)[0]


def build_device_rollups(
    accepted: Iterable[Accepted], bucket_ms: int
) -> dict[RollupKey, CohortRollup]:
    """The rollup of each device's rows in these batches, keyed like `build_rollups` with the
    device id in place of the group (to be merged with the stored ones)."""
    return {
        _keyed(owners[0], rest): cols.rollup()
        for (owners, *rest), cols in _collect(accepted, lambda d: (d,), bucket_ms).items()
    }
