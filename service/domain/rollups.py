"""A compact, mergeable summary of one cohort's telemetry: what the health gates read.

A `CohortRollup` holds counts, exact sums, two fixed histograms and device sets, so that the
rollups of time buckets, cores or partitions add up to the rollup of all their rows, and a gate
over ten million inferences reads a few thousand numbers instead of the rows.

Layout (version `tinyfleet.rollup/1`; changing it needs a new version):
- latency: integer microsecond edges 0, then round(2^(k/32)) for k = 0..828 without repeats, so
  bins are exact below 46 us and about 2.2 % wide above; 60 s (the schema's maximum) fits;
- score: scores are quantised to 5 decimals (as the wire carries them) and binned by 0.001;
  the score sum is kept in those integer units, so the mean is exact and merging is exact;
- labels: a count per label; anomalies: flagged rows out of rows that reported the flag;
- devices: the device ids seen, and those that reported an error, a revert or a crash event.
  An error is a `reject` event or any other non-zero event code except revert and crash.

Invariants:
- Pure: no I/O, no clock. A rollup never changes after it is built; arrays are read-only.
- `a.merge(b)` equals the rollup of a's rows followed by b's, exactly (integers only), and
  merging is commutative and associative with `CohortRollup.empty()` as identity.
- Rows outside the schema's ranges raise `RollupError` and add nothing.
- `merge_by_device` gives each device the exact merge of its own rollups (what
  `service.domain.device_gates.evaluate_devices` takes); a rollup of several devices cannot be
  split and raises `RollupError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from device_agent.protocol.telemetry import EventRecord, InferenceRecord
from service.domain.errors import DomainError
from service.domain.stats import histogram_quantile

__all__ = [
    "LATENCY_EDGES_US",
    "LAYOUT",
    "SCORE_EDGES",
    "CohortRollup",
    "RollupError",
    "merge_all",
    "merge_by_device",
]

LAYOUT = "tinyfleet.rollup/1"
MAX_LATENCY_US = 60_000_000
SCORE_SCALE = 100_000  # five decimals, the wire's precision
SCORE_BINS = 1000
LATENCY_EDGES_US: NDArray[np.int64] = np.concatenate(
    ([0], np.unique(np.round(2.0 ** (np.arange(829) / 32.0)).astype(np.int64)))
)
SCORE_EDGES: NDArray[np.float64] = np.linspace(0.0, 1.0, SCORE_BINS + 1)
LATENCY_BINS = LATENCY_EDGES_US.shape[0] - 1


class RollupError(DomainError, ValueError):
    """Rows or a stored rollup that do not fit the schema; the caller must fix or drop them."""


def _frozen(array: NDArray[np.int64]) -> NDArray[np.int64]:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class CohortRollup:
    inferences: int
    latency_sum_us: int
    latency_counts: NDArray[np.int64]
    score_sum_units: int  # scores in 1 / SCORE_SCALE
    score_counts: NDArray[np.int64]
    anomalies: int
    anomaly_reported: int
    labels: tuple[tuple[str, int], ...]  # sorted by label
    devices: frozenset[str]
    devices_with_error: frozenset[str]
    devices_reverted: frozenset[str]
    devices_crashed: frozenset[str]
    errors: int
    reverts: int
    crashes: int

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> CohortRollup:
        return cls(
            0,
            0,
            _frozen(np.zeros(LATENCY_BINS, np.int64)),
            0,
            _frozen(np.zeros(SCORE_BINS, np.int64)),
            0,
            0,
            (),
            frozenset(),
            frozenset(),
            frozenset(),
            frozenset(),
            0,
            0,
            0,
        )

    @classmethod
    def from_columns(
        cls,
        devices: Iterable[str],
        latency_us: ArrayLike,
        scores: ArrayLike,
        *,
        label_names: Sequence[str] = (),
        label_codes: ArrayLike | None = None,
        anomaly: ArrayLike | None = None,
    ) -> CohortRollup:
        """Inference rows as columns (the fast path); label code -1 means no label."""
        latency = np.asarray(latency_us)
        score = np.asarray(scores, dtype=np.float64)
        n = latency.shape[0] if latency.ndim == 1 else -1
        if n < 0 or score.shape != (n,):
            raise RollupError("latency and score must be one-dimensional columns of one length")
        if n and not np.issubdtype(latency.dtype, np.integer):
            raise RollupError("latency must be whole microseconds")
        if n and (latency.min() < 0 or latency.max() > MAX_LATENCY_US):
            raise RollupError(f"latency must be in [0, {MAX_LATENCY_US}] us")
        if n and not (np.all(np.isfinite(score)) and score.min() >= 0.0 and score.max() <= 1.0):
            raise RollupError("score must be in [0, 1]")
        units = np.rint(score * SCORE_SCALE).astype(np.int64)
        latency_bins = np.searchsorted(LATENCY_EDGES_US, latency, side="right") - 1
        score_bins = np.minimum(units // (SCORE_SCALE // SCORE_BINS), SCORE_BINS - 1)
        labels = cls._label_counts(n, label_names, label_codes)
        flagged, reported = 0, 0
        if anomaly is not None:
            flags = np.asarray(anomaly)
            if flags.shape != (n,) or (n and flags.dtype != np.bool_):
                raise RollupError("anomaly must be a boolean column of the rows' length")
            flagged, reported = int(np.count_nonzero(flags)), n
        return cls(
            n,
            int(latency.sum(dtype=np.int64)) if n else 0,
            _frozen(np.bincount(latency_bins, minlength=LATENCY_BINS).astype(np.int64)),
            int(units.sum()),
            _frozen(np.bincount(score_bins, minlength=SCORE_BINS).astype(np.int64)),
            flagged,
            reported,
            labels,
            frozenset(devices),
            frozenset(),
            frozenset(),
            frozenset(),
            0,
            0,
            0,
        )

    @staticmethod
    def _label_counts(
        n: int, names: Sequence[str], codes: ArrayLike | None
    ) -> tuple[tuple[str, int], ...]:
        if codes is None:
            return ()
        code = np.asarray(codes)
        if code.shape != (n,) or (n and not np.issubdtype(code.dtype, np.integer)):
            raise RollupError("label codes must be an integer column of the rows' length")
        if n and (code.min() < -1 or code.max() >= len(names)):
            raise RollupError(f"label codes must be -1 or index one of {len(names)} names")
        if len(set(names)) != len(names):
            raise RollupError("label names must be distinct")
        counts = np.bincount(code[code >= 0], minlength=len(names))
        return tuple(sorted((names[i], int(c)) for i, c in enumerate(counts) if c))

    @classmethod
    def from_records(
        cls,
        device_id: str,
        inference: Iterable[InferenceRecord] = (),
        events: Iterable[EventRecord] = (),
    ) -> CohortRollup:
        """One device's decoded telemetry rows (already filtered to the cohort's model)."""
        rows = list(inference)
        names = sorted({r.label for r in rows if r.label is not None})
        index = {name: i for i, name in enumerate(names)}
        reported = [r.anomaly for r in rows if r.anomaly is not None]
        rollup = cls.from_columns(
            [device_id],
            np.array([r.latency_us for r in rows], dtype=np.int64),
            np.array([r.score for r in rows], dtype=np.float64),
            label_names=names,
            label_codes=np.array(
                [-1 if r.label is None else index[r.label] for r in rows], dtype=np.int64
            ),
        )
        kinds = [(e.kind, e.code) for e in events]
        errors = sum(1 for kind, code in kinds if _is_error(kind, code))
        reverts = sum(1 for kind, _ in kinds if kind == "revert")
        crashes = sum(1 for kind, _ in kinds if kind == "crash")
        mine = frozenset([device_id])
        return CohortRollup(
            **{
                **rollup._fields(),
                "anomalies": sum(reported),
                "anomaly_reported": len(reported),
                "devices_with_error": mine if errors else frozenset(),
                "devices_reverted": mine if reverts else frozenset(),
                "devices_crashed": mine if crashes else frozenset(),
                "errors": errors,
                "reverts": reverts,
                "crashes": crashes,
            }
        )

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    # -- combining -----------------------------------------------------------------------------

    def merge(self, other: CohortRollup) -> CohortRollup:
        return merge_all((self, other))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CohortRollup):
            return NotImplemented
        mine, theirs = self._fields(), other._fields()
        return all(
            np.array_equal(value, theirs[name])
            if isinstance(value, np.ndarray)
            else value == theirs[name]
            for name, value in mine.items()
        )

    __hash__ = None  # type: ignore[assignment]

    # -- reading -------------------------------------------------------------------------------

    @property
    def label_counts(self) -> dict[str, int]:
        return dict(self.labels)

    @property
    def latency_mean_us(self) -> float:
        return self.latency_sum_us / self.inferences if self.inferences else 0.0

    def latency_quantile_us(self, q: float) -> float:
        """Within one bin (about 2.2 %) of the exact quantile."""
        return histogram_quantile(self.latency_counts, LATENCY_EDGES_US, q)

    @property
    def score_mean(self) -> float:
        return self.score_sum_units / SCORE_SCALE / self.inferences if self.inferences else 0.0

    @property
    def anomaly_rate(self) -> float:
        return self.anomalies / self.anomaly_reported if self.anomaly_reported else 0.0

    # -- storing -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; histograms are sparse [bin, count] pairs."""
        document = self._fields()
        for name in ("latency_counts", "score_counts"):
            counts = document[name]
            document[name] = [[int(i), int(counts[i])] for i in np.flatnonzero(counts)]
        for name in ("devices", "devices_with_error", "devices_reverted", "devices_crashed"):
            document[name] = sorted(document[name])
        document["labels"] = [list(pair) for pair in self.labels]
        return {"layout": LAYOUT, **document}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CohortRollup:
        if document.get("layout") != LAYOUT:
            raise RollupError(f"rollup layout {document.get('layout')!r} is not {LAYOUT}")
        try:
            fields = {name: document[name] for name in cls.__dataclass_fields__}
            for name, bins in (("latency_counts", LATENCY_BINS), ("score_counts", SCORE_BINS)):
                dense = np.zeros(bins, np.int64)
                for index, count in fields[name]:
                    if not 0 <= int(index) < bins:
                        raise ValueError(f"{name} bin {index} is outside [0, {bins})")
                    dense[int(index)] += int(count)
                fields[name] = _frozen(dense)
            for name in ("devices", "devices_with_error", "devices_reverted", "devices_crashed"):
                fields[name] = frozenset(str(device) for device in fields[name])
            fields["labels"] = tuple(sorted((str(k), int(v)) for k, v in fields["labels"]))
            for name in _INTEGER_FIELDS:
                fields[name] = int(fields[name])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RollupError(f"stored rollup is malformed: {exc}") from exc
        rollup = cls(**fields)
        if (
            int(rollup.latency_counts.sum()) != rollup.inferences
            or min(rollup.latency_counts.min(), rollup.score_counts.min()) < 0
        ):
            raise RollupError("stored rollup's histograms do not add up to its inferences")
        return rollup


_INTEGER_FIELDS = (
    "inferences",
    "latency_sum_us",
    "score_sum_units",
    "anomalies",
    "anomaly_reported",
    "errors",
    "reverts",
    "crashes",
)


def _is_error(kind: str, code: int) -> bool:
    return kind == "reject" or (kind not in ("revert", "crash") and code != 0)


def merge_all(rollups: Iterable[CohortRollup]) -> CohortRollup:
    """The rollup of all the given rollups' rows, in one pass."""
    parts = list(rollups)
    if not parts:
        return CohortRollup.empty()
    labels: dict[str, int] = {}
    for part in parts:
        for label, count in part.labels:
            labels[label] = labels.get(label, 0) + count
    return CohortRollup(
        sum(p.inferences for p in parts),
        sum(p.latency_sum_us for p in parts),
        _frozen(np.sum([p.latency_counts for p in parts], axis=0, dtype=np.int64)),
        sum(p.score_sum_units for p in parts),
        _frozen(np.sum([p.score_counts for p in parts], axis=0, dtype=np.int64)),
        sum(p.anomalies for p in parts),
        sum(p.anomaly_reported for p in parts),
        tuple(sorted(labels.items())),
        frozenset().union(*(p.devices for p in parts)),
        frozenset().union(*(p.devices_with_error for p in parts)),
        frozenset().union(*(p.devices_reverted for p in parts)),
        frozenset().union(*(p.devices_crashed for p in parts)),
        sum(p.errors for p in parts),
        sum(p.reverts for p in parts),
        sum(p.crashes for p in parts),
    )


def merge_by_device(rollups: Iterable[CohortRollup]) -> dict[str, CohortRollup]:
    """Device id -> the merge of that device's rollups; each rollup must hold one device's rows."""
    parts: dict[str, list[CohortRollup]] = {}
    for rollup in rollups:
        seen = rollup.devices | rollup.devices_with_error | rollup.devices_reverted
        seen |= rollup.devices_crashed
        if len(seen) > 1:
            raise RollupError(f"a rollup of {len(seen)} devices cannot be split by device")
        for device in seen:
            parts.setdefault(device, []).append(rollup)
    return {device: merge_all(parts[device]) for device in sorted(parts)}
