"""The gate per model slot: canary and control paired by (core, model id), judged, combined.

A cohort is its devices' stored rollups, device id -> rows; each device's rows are split into
model slots, so a pair holds each cohort per device (device id -> that device's rollup in the
slot), the unit the statistics need (devices, not rows, are independent). A cohort's rows are
split into model slots: one per (core, model id) that reported
inferences, over all of that model's versions (the canary runs the new version, the control the
old one). Each slot also gets its core's events (rows with that core and model id "") and the
device-level events (core ""; their flagged devices only), so the device rates (error, revert,
crash) are judged per slot too. A canary core with events but no inferences (a model that fails
before its first result) is a slot of model id "" judged on the device rates alone. A canary slot
is paired with the control slot of the same (core, model id); a canary slot without one (a model
id new on that core) is paired with an empty control, which WAITs: there is no old model to
compare it with. Control-only slots (a model the new release dropped) are not judged.

`judge_pairs` judges each pair through `_evaluate`, the device-level, always-valid test of
`service.domain.device_gates` (ADR 0010), with the score's direction of the slot's new model
(`directions`, model id -> the directions its release recorded at upload), the policy's alpha
split evenly across k pairs (Bonferroni), and combines: FAIL if any pair FAILs, else WAIT if any
pair WAITs, else PASS. k is the larger of the pairs judged now and `expected_slots` (the
release's cores): a k that grew as slots began to report would give the first slot alpha / 1
at its early looks, and the split must hold at every look, not only the last. With no pair, the
pooled cohorts decide (a WAIT for samples, unless the device rates alone FAIL), so that the
verdict keeps its shape. A device in both cohorts (the control holds the canary devices' rows
from before their update: in the last stage it is all the control there is) counts as two
units; its two halves are positively correlated, which makes the unpaired test conservative.

Invariants:
- Pure: no I/O, no clock; the same rows and policy always give the same verdict.
- Every inference row counts in exactly one slot of its own device; a device's slot rollup is
  the exact merge of its rows, and a pair never holds a device without rows in the slot.
- Family-wise false alarms: each pair FAILs an equal model with probability at most alpha / k
  at any look (`evaluate_devices`' Holm bound over anytime-valid p-values at that alpha), so the
  gate FAILs an equal release with probability at most alpha over all its looks, whatever the
  dependence between pairs.
- The short reason is at most `SUMMARY_MAX` characters and carries at most three numbers; the
  stored document keeps every pair's full verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from service.domain.device_gates import evaluate_devices
from service.domain.directions import Direction
from service.domain.gates import (
    GatePolicy,
    GatePolicyError,
    GateVerdict,
    Metric,
    MetricResult,
    MetricStatus,
    Outcome,
)
from service.domain.rollups import CohortRollup, merge_all

__all__ = [
    "SUMMARY_MAX",
    "ByDevice",
    "Directions",
    "PairedVerdict",
    "RollupRow",
    "Slot",
    "SlotPair",
    "judge_pairs",
    "pair_slots",
    "pooled_by_device",
]

SUMMARY_MAX = 80
RollupRow = tuple[Mapping[str, Any], CohortRollup]
ByDevice = Mapping[str, CohortRollup]  # device id -> that device's rollup


@dataclass(frozen=True, order=True)
class Slot:
    """One model on one core."""

    core: str
    model_id: str

    @property
    def label(self) -> str:
        return f"{self.core}/{self.model_id or 'events'}"


@dataclass(frozen=True)
class SlotPair:
    """One slot's cohorts, per device."""

    slot: Slot
    canary_by_device: ByDevice
    control_by_device: ByDevice
    canary_versions: tuple[str, ...]
    control_versions: tuple[str, ...]

    @cached_property
    def canary(self) -> CohortRollup:
        """The canary's devices merged."""
        return merge_all(self.canary_by_device.values())

    @cached_property
    def control(self) -> CohortRollup:
        return merge_all(self.control_by_device.values())


@dataclass
class _Split:
    models: dict[Slot, list[CohortRollup]]
    versions: dict[Slot, set[str]]
    core_events: dict[str, list[CohortRollup]]
    device_events: list[CohortRollup]


def _events_only(rollup: CohortRollup) -> CohortRollup:
    """A device row's events without its presence: devices that sent anything are not devices of
    every model, but a device-level error counts against each model the device runs."""
    flagged = rollup.devices_with_error | rollup.devices_reverted | rollup.devices_crashed
    return replace(
        CohortRollup.empty(),
        devices=flagged,
        devices_with_error=rollup.devices_with_error,
        devices_reverted=rollup.devices_reverted,
        devices_crashed=rollup.devices_crashed,
        errors=rollup.errors,
        reverts=rollup.reverts,
        crashes=rollup.crashes,
    )


def _split(rows: Iterable[RollupRow]) -> _Split:
    split = _Split({}, {}, {}, [])
    for key, rollup in rows:
        core, model_id = str(key["core"]), str(key["model_id"])
        if model_id:
            slot = Slot(core, model_id)
            split.models.setdefault(slot, []).append(rollup)
            split.versions.setdefault(slot, set()).add(str(key["model_version"]))
        elif core:
            split.core_events.setdefault(core, []).append(rollup)
        else:
            split.device_events.append(_events_only(rollup))
    return split


def _slot_rollup(split: _Split, slot: Slot) -> CohortRollup:
    if slot.model_id:
        parts = split.models.get(slot, [])
    else:  # a core that reported events only: its devices are those of any model on the core
        parts = [r for s, rs in split.models.items() if s.core == slot.core for r in rs]
    parts = parts + split.core_events.get(slot.core, [])
    # A device-level error counts against each model the device runs, and a device that
    # failed before any core reported (only device-level events) against every model.
    return merge_all([*parts, *split.device_events])


def _per_slot(splits: Mapping[str, _Split], slot: Slot) -> dict[str, CohortRollup]:
    found = {device: _slot_rollup(split, slot) for device, split in sorted(splits.items())}
    return {device: rollup for device, rollup in found.items() if rollup.devices}


def pair_slots(
    canary_rows: Mapping[str, Iterable[RollupRow]], control_rows: Mapping[str, Iterable[RollupRow]]
) -> list[SlotPair]:
    """One pair per model slot the canary reported, and one per core with canary events but no
    canary inferences (model id "": judged on the device rates only), sorted by slot; each
    cohort is given per device (device id -> its rows)."""
    canary = {device: _split(rows) for device, rows in canary_rows.items()}
    control = {device: _split(rows) for device, rows in control_rows.items()}
    models = {slot for split in canary.values() for slot in split.models}
    modelled = {slot.core for slot in models}
    quiet = {
        Slot(core, "")
        for split in canary.values()
        for core in split.core_events
        if core not in modelled
    }

    def versions(splits: Mapping[str, _Split], slot: Slot) -> tuple[str, ...]:
        return tuple(sorted({v for s in splits.values() for v in s.versions.get(slot, ())}))

    return [
        SlotPair(
            slot,
            _per_slot(canary, slot),
            _per_slot(control, slot),
            versions(canary, slot),
            versions(control, slot),
        )
        for slot in sorted(models | quiet)
    ]


def pooled_by_device(rows: Mapping[str, Iterable[RollupRow]]) -> dict[str, CohortRollup]:
    """Each device's rows merged over every slot (the cohorts when no slot can be paired)."""
    merged = {device: merge_all(r for _, r in device_rows) for device, device_rows in rows.items()}
    return {device: rollup for device, rollup in sorted(merged.items()) if rollup.devices}


_INFERENCE_LIMITS = (
    "max_latency_p95_increase",
    "max_confidence_drop",
    "max_anomaly_rate_increase",
    "max_label_psi",
)


def _device_policy(policy: GatePolicy) -> GatePolicy | None:
    """The policy's device-rate limits only; None when it has none."""
    try:
        return replace(policy, **dict.fromkeys(_INFERENCE_LIMITS))  # type: ignore[arg-type]
    except GatePolicyError:
        return None


@dataclass(frozen=True)
class PairedVerdict:
    """The combined verdict and each pair's own (judged at `pair_alpha`)."""

    outcome: Outcome
    policy: GatePolicy
    pair_alpha: float
    pairs: tuple[tuple[SlotPair, GateVerdict], ...]  # sorted by slot
    # With no judged slot: the verdict over the pooled cohorts (a WAIT for samples, or a FAIL
    # of the device rates when the canary reports only events), so the shape stays the same.
    pooled: GateVerdict | None = None
    # Why the gate holds a verdict that is not a FAIL as a WAIT (the stage's own devices have
    # not soaked yet), and the stage's figures the caller judged that on.
    hold: str | None = None
    stage_figures: Mapping[str, float] = field(default_factory=dict)

    def held(self, reason: str | None, figures: Mapping[str, float]) -> PairedVerdict:
        """This verdict with the stage's figures; a WAIT saying `reason` unless it FAILs
        (harm seen on the devices already updated stops the stage at once)."""
        if reason is None or self.outcome is Outcome.FAIL:
            return replace(self, stage_figures=dict(figures))
        return replace(self, outcome=Outcome.WAIT, hold=reason, stage_figures=dict(figures))

    # -- reading -----------------------------------------------------------------------------

    @property
    def decisive(self) -> tuple[SlotPair | None, GateVerdict]:
        """The pair that decides the outcome: the failing pair with the largest effect over its
        limit, else the first waiting pair, else the first pair."""
        if self.pooled is not None:
            return None, self.pooled
        failing = [(p, v) for p, v in self.pairs if v.outcome is Outcome.FAIL]
        if failing:
            return max(failing, key=lambda pv: _worst_ratio(pv[1]))
        waiting = [(p, v) for p, v in self.pairs if v.outcome is Outcome.WAIT]
        return (waiting or list(self.pairs))[0]

    @property
    def reasons(self) -> tuple[str, ...]:
        if self.pooled is not None:
            return tuple(f"all cores {line}" for line in self.pooled.reasons)
        return tuple(
            f"{pair.slot.label} {line}"
            for pair, verdict in self.pairs
            for line in (verdict.reasons if verdict.outcome is Outcome.FAIL else ())
        )

    @property
    def missing(self) -> tuple[str, ...]:
        if self.pooled is not None:
            return self.pooled.missing
        return tuple(
            f"{pair.slot.label} {line}" for pair, verdict in self.pairs for line in verdict.missing
        )

    def _totals(self) -> dict[str, float]:
        if self.pooled is not None:
            v = self.pooled
            return {
                "canary_inferences": float(v.canary_inferences),
                "control_inferences": float(v.control_inferences),
                "canary_devices": float(v.canary_devices),
                "control_devices": float(v.control_devices),
            }
        canaries = [p.canary for p, _ in self.pairs]
        controls = [p.control for p, _ in self.pairs]
        return {
            "canary_inferences": float(sum(c.inferences for c in canaries)),
            "control_inferences": float(sum(c.inferences for c in controls)),
            "canary_devices": float(len(frozenset().union(*(c.devices for c in canaries)))),
            "control_devices": float(len(frozenset().union(*(c.devices for c in controls)))),
        }

    def reason(self) -> str:
        """The full reason that is stored with the verdict."""
        found = "; ".join(self.reasons or self.missing) or "every model within its limits"
        return found if self.hold is None else f"{self.hold}; {found}"

    def cohorts(self) -> dict[str, float]:
        """The cohort sizes and the stage's figures (what a stored decision shows)."""
        return {**self._totals(), **self.stage_figures}

    def numbers(self) -> dict[str, float]:
        """Every number for the stored verdict: totals, the decisive pair's metrics unprefixed,
        and each pair's metrics prefixed with its slot."""
        numbers = {
            **self.cohorts(),
            "alpha": self.policy.alpha,
            "pairs": float(len(self.pairs)),
        }
        if self.pairs:
            numbers["pair_alpha"] = self.pair_alpha
        _, decisive = self.decisive
        numbers.update(_metric_numbers(decisive, ""))
        for pair, verdict in self.pairs:
            numbers.update(_metric_numbers(verdict, f"{pair.slot.label}."))
        return numbers

    def document(self) -> dict[str, Any]:
        """The stored `metrics` document: a verdict's shape (the decisive pair's metrics, the
        combined outcome, reasons and totals), plus every pair's full verdict under `pairs`."""
        pair, decisive = self.decisive
        totals = self._totals()
        return {
            **decisive.to_dict(),
            "outcome": self.outcome.value,
            "stage": self.policy.stage,
            "action": self.policy.on_fail.value if self.outcome is Outcome.FAIL else None,
            "alpha": self.policy.alpha,
            "reasons": list(self.reasons),
            "missing": list(self.missing),
            **{name: int(value) for name, value in totals.items()},
            "decisive": None if pair is None else pair.slot.label,
            "hold": self.hold,
            "stage_figures": dict(self.stage_figures),
            "pair_alpha": self.pair_alpha,
            "pairs": [
                {
                    "core": p.slot.core,
                    "model_id": p.slot.model_id,
                    "canary_versions": list(p.canary_versions),
                    "control_versions": list(p.control_versions),
                    "verdict": v.to_dict(),
                }
                for p, v in self.pairs
            ],
        }

    def summary(self) -> tuple[str, dict[str, float]]:
        """A short reason naming the failing or waiting slots, and at most three numbers (the
        engine writes both into bounded reason columns)."""
        _, decisive = self.decisive
        if self.hold is not None:
            figures = self.stage_figures
            numbers = {
                name: figures[name]
                for name in ("stage_soaked", "stage_devices", "stage_needed")
                if name in figures
            }
            return _clip(self.hold), numbers
        if self.outcome is Outcome.FAIL:
            judged = (
                [(p.slot.label, v) for p, v in self.pairs]
                if self.pooled is None
                else [("all cores", self.pooled)]
            )
            parts = []
            for label, v in sorted(judged, key=lambda lv: -_worst_ratio(lv[1])):
                failed = _failed(v)
                if failed:
                    listed = "; ".join(
                        f"{m.metric.value} {m.effect:.3g} > {m.limit:g}" for m in failed
                    )
                    parts.append(f"{label}: {listed}")
            text = " | ".join(parts)
            numbers = {f"{m.metric.value}.p": m.p_adjusted for m in _failed(decisive)[:3]}
        elif self.outcome is Outcome.WAIT:
            text, numbers = self._waiting()
        elif self.pooled is not None:
            text = "no model reported; device rates within their limits"
            numbers = {"canary_inferences": 0.0}
        else:
            text = f"every model within its limits ({len(self.pairs)} judged)"
            numbers = {"canary_inferences": self._totals()["canary_inferences"]}
        return _clip(text), numbers

    def _waiting(self) -> tuple[str, dict[str, float]]:
        totals = self._totals()
        numbers = {
            "canary_inferences": totals["canary_inferences"],
            "canary_devices": totals["canary_devices"],
        }
        if self.pooled is not None:
            return "too few samples: no model reported by the canary yet", numbers
        short = any(
            m.detail.startswith("too few samples")
            for _, v in self.pairs
            for m in v.metrics
            if m.status is MetricStatus.WAIT
        )
        why = "too few samples" if short else "not significant yet"
        named = []
        for p, v in self.pairs:
            waiting = [m for m in v.metrics if m.status is MetricStatus.WAIT]
            unsure = [m.metric.value for m in waiting if not m.detail.startswith("too few")]
            if unsure:
                named.append(f"{p.slot.label} " + ", ".join(unsure))
            elif waiting:
                named.append(p.slot.label)
        return f"{why}: " + ", ".join(named), numbers


def _failed(verdict: GateVerdict) -> list[MetricResult]:
    failed = [m for m in verdict.metrics if m.status is MetricStatus.FAIL]
    return sorted(failed, key=lambda m: m.effect / m.limit if m.limit else 0.0, reverse=True)


def _worst_ratio(verdict: GateVerdict) -> float:
    failed = _failed(verdict)
    return failed[0].effect / failed[0].limit if failed and failed[0].limit else 0.0


def _metric_numbers(verdict: GateVerdict, prefix: str) -> dict[str, float]:
    numbers: dict[str, float] = {}
    for metric in verdict.metrics:
        name = f"{prefix}{metric.metric.value}"
        numbers[f"{name}.effect"] = metric.effect
        numbers[f"{name}.limit"] = metric.limit
        numbers[f"{name}.p_adjusted"] = metric.p_adjusted
    return numbers


def _clip(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 3] + "..."


Directions = Mapping[str, Mapping[Metric, Direction]]  # model id -> its metrics' directions
BEFORE = "#before"  # suffix of a control unit that is also a canary device (see the module)


def _evaluate(
    policy: GatePolicy,
    canary: ByDevice,
    control: ByDevice,
    directions: Mapping[Metric, Direction] | None = None,
) -> GateVerdict:
    """One pair's verdict from its per-device cohorts: the single place the statistics are
    called."""
    control = {
        (f"{d}{BEFORE}" if d in canary else d): (
            _renamed(r, d, f"{d}{BEFORE}") if d in canary else r
        )
        for d, r in control.items()
    }
    return evaluate_devices(policy, canary, control, directions=directions)


def _renamed(rollup: CohortRollup, old: str, new: str) -> CohortRollup:
    """`rollup` with device `old` called `new` in each of its device sets."""

    def swap(devices: frozenset[str]) -> frozenset[str]:
        return frozenset(new if d == old else d for d in devices)

    return replace(
        rollup,
        devices=swap(rollup.devices),
        devices_with_error=swap(rollup.devices_with_error),
        devices_reverted=swap(rollup.devices_reverted),
        devices_crashed=swap(rollup.devices_crashed),
    )


def judge_pairs(
    policy: GatePolicy,
    pairs: Sequence[SlotPair],
    *,
    pooled: tuple[ByDevice, ByDevice] | None = None,
    directions: Directions | None = None,
    expected_slots: int = 1,
) -> PairedVerdict:
    """Judge each pair at alpha / k and combine (see the module docstring). `pooled` (the
    cohorts over every slot, per device) is judged only when no pair exists, for a WAIT of the
    usual shape."""
    judgeable = [(pair, policy if pair.slot.model_id else _device_policy(policy)) for pair in pairs]
    judged_pairs = [(pair, rules) for pair, rules in judgeable if rules is not None]
    if not judged_pairs:
        canary, control = pooled or ({}, {})
        verdict = _evaluate(policy, canary, control)
        return PairedVerdict(verdict.outcome, policy, policy.alpha, (), pooled=verdict)
    k = max(len(judged_pairs), expected_slots)
    judged = tuple(
        (
            pair,
            _evaluate(
                replace(rules, alpha=rules.alpha / k),
                pair.canary_by_device,
                pair.control_by_device,
                (directions or {}).get(pair.slot.model_id),
            ),
        )
        for pair, rules in judged_pairs
    )
    outcomes = {verdict.outcome for _, verdict in judged}
    outcome = (
        Outcome.FAIL
        if Outcome.FAIL in outcomes
        else Outcome.WAIT
        if Outcome.WAIT in outcomes
        else Outcome.PASS
    )
    return PairedVerdict(outcome, policy, policy.alpha / k, judged)
