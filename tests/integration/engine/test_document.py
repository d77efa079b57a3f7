"""The public spec document (`POST /rollouts` body) <-> RolloutSpec: round trip, defaults, and
a SpecError naming the document field for every kind of bad input."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.domain.errors import SpecError
from service.domain.gates import FailAction, GatePolicy
from service.domain.spec import (
    Advance,
    FailureAction,
    FailurePolicy,
    IncreaseOn,
    RatePolicy,
    RetryPolicy,
    RolloutSpec,
    Stage,
    SuccessPolicy,
)
from service.domain.windows import MaintenanceWindow
from service.engine import DEFAULT_GATE, NO_GATE, spec_from_document, spec_to_document
from service.engine._codec import spec_from_json, spec_to_json


def full_spec(zone: str = "Europe/Berlin") -> RolloutSpec:
    return RolloutSpec(
        rollout_id="ro-7",
        release_id="kws-2",
        group_id="berlin",
        previous_release_id="kws-1",
        production=True,
        stages=(
            Stage("canary", timedelta(minutes=30), count=5),
            Stage("half", timedelta(hours=1), percent=50.5),
            Stage("all", timedelta(0), percent=100),
        ),
        success=SuccessPolicy(95, Advance.APPROVAL, require_gate=True),
        failure=FailurePolicy(12.5, 3, FailureAction.ROLLBACK),
        retry=RetryPolicy(
            timedelta(minutes=20), timedelta(minutes=90), 3, timedelta(seconds=30), timedelta(2)
        ),
        rate=RatePolicy(50, 2.0, 500, IncreaseOn.NOTIFIED, 5000),
        start_at=datetime(2026, 11, 26, 8, tzinfo=UTC),
        windows=(MaintenanceWindow.parse("0 2 * * 1-5", timedelta(minutes=90), zone),),
        gate=GatePolicy(stage="every", max_label_psi=None, on_fail=FailAction.ROLLBACK),
    )


def minimal() -> dict[str, Any]:
    return {
        "id": "ro-1",
        "release_id": "rel-2",
        "group_id": "g1",
        "stages": [{"name": "all", "percent": 100, "soak_seconds": 600}],
    }


def test_round_trip() -> None:
    spec = full_spec()
    document = spec_to_document(spec)
    assert document["stages"][0] == {"name": "canary", "soak_seconds": 1800, "count": 5}
    assert document["windows"] == [{"cron": "0 2 * * 1-5", "duration_minutes": 90}]
    assert spec.gate is not None and document["gate"] == spec.gate.to_dict()
    back = spec_from_document(document, time_zone="Europe/Berlin", production=True)
    assert back == spec


def test_the_stored_spec_keeps_the_gate_under_its_key() -> None:
    spec = full_spec()
    stored = spec_to_json(spec)
    assert spec.gate is not None and stored["gate"] == spec.gate.to_dict()
    assert spec_from_json(stored) == spec
    stored = spec_to_json(full_spec())
    ungated = {**stored, "gate": None, "success": {**stored["success"], "require_gate": False}}
    assert spec_from_json(ungated).gate is None
    assert stored["time_zone"] == "Europe/Berlin" and stored["production"] is spec.production


def test_the_stored_spec_is_the_public_document() -> None:
    """`GET /rollouts/{id}` returns the stored spec: the shape `POST /rollouts` takes."""
    spec = full_spec()
    stored = spec_to_json(spec)
    document = {k: v for k, v in stored.items() if k not in ("production", "time_zone")}
    assert document == spec_to_document(spec)
    assert (
        spec_from_document(document, time_zone="Europe/Berlin", production=spec.production) == spec
    )


def test_windows_in_two_zones_cannot_be_stored() -> None:
    spec = full_spec()
    two = replace(
        spec,
        windows=(*spec.windows, MaintenanceWindow.parse("0 3 * * *", timedelta(hours=1), "UTC")),
    )
    with pytest.raises(ValueError, match="one time zone"):
        spec_to_json(two)


def test_defaults_and_overrides() -> None:
    spec = spec_from_document(minimal(), rollout_id="ro-9")
    assert spec.rollout_id == "ro-9" and not spec.production
    assert spec.success == SuccessPolicy() and spec.failure == FailurePolicy()
    assert spec.retry == RetryPolicy() and spec.rate == RatePolicy()
    assert spec.gate is None and spec.windows == () and spec.start_at is None
    assert spec.stages == (Stage("all", timedelta(minutes=10), percent=100),)


def test_install_and_core_silence_bounds_are_read_and_written() -> None:
    document = _with("deadlines.install_seconds", 600)
    document.setdefault("retry", {})["core_silence_seconds"] = 30
    spec = spec_from_document(document, rollout_id="ro-9")
    assert spec.retry.install_stall == timedelta(minutes=10)
    assert spec.retry.core_silence == timedelta(seconds=30)
    written = spec_to_document(spec)
    assert written["deadlines"]["install_seconds"] == 600
    assert written["retry"]["core_silence_seconds"] == 30


def _with(path: str, value: object) -> dict[str, Any]:
    document = minimal()
    *parents, last = path.split(".")
    target: Any = document
    for key in parents:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    target[last] = value
    return document


TIMEOUT = "retry.in_progress_timeout_seconds"
HOURLY = "0 * * * *"
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("missing-id", {k: v for k, v in minimal().items() if k != "id"}, "id"),
    ("bad-id", _with("id", "no spaces allowed"), "id"),
    ("unknown-top", _with("colour", "red"), "colour"),
    ("stages-not-list", _with("stages", {"name": "x"}), "stages"),
    ("no-stages", _with("stages", []), "stages"),
    ("stage-unknown", _with("stages.0.weight", 3), "stages[0].weight"),
    ("stage-percent-text", _with("stages.0.percent", "10"), "stages[0].percent"),
    ("stage-percent-over", _with("stages.0.percent", 101), "stages[0].percent"),
    ("stage-both", _with("stages.0.count", 4), "stages[0]"),
    ("stage-soak-negative", _with("stages.0.soak_seconds", -1), "stages[0].soak"),
    ("stage-gate", _with("stages.0.gate", {"stage": "x"}), "stages[0].gate"),
    ("success-bool", _with("success.require_gate", "yes"), "success.require_gate"),
    ("require-gate-no-gate", _with("success.require_gate", True), "success.require_gate"),
    ("advance", _with("success.advance", "later"), "success.advance"),
    ("failure-action", _with("failure.action", "explode"), "failure.action"),
    ("rollback-no-previous", _with("failure.action", "rollback"), "failure.action"),
    ("min-devices-float", _with("failure.min_devices", 2.5), "failure.min_devices"),
    (
        "retry-timeout",
        _with("retry.in_progress_timeout_seconds", 1),
        "retry.in_progress_timeout_seconds",
    ),
    ("retry-nan", _with("retry.backoff_base_seconds", float("nan")), "retry.backoff_base_seconds"),
    ("core-silence", _with("retry.core_silence_seconds", 0), "retry.core_silence_seconds"),
    ("install-short", _with("deadlines.install_seconds", 5), "deadlines.install_seconds"),
    ("rate-factor", _with("rate.factor", 9), "rate.factor"),
    ("rate-unknown", _with("rate.burst", 9), "rate.burst"),
    ("start-naive", _with("start_at", "2026-11-26T08:00:00"), "start_at"),
    ("start-garbage", _with("start_at", "tomorrow"), "start_at"),
    (
        "window-cron",
        _with("windows", [{"cron": "61 * * * *", "duration_minutes": 5}]),
        "windows[0]",
    ),
    (
        "window-long",
        _with("windows", [{"cron": HOURLY, "duration_minutes": 2000}]),
        "windows[0].duration",
    ),
    (
        "window-huge",
        _with("windows", [{"cron": HOURLY, "duration_minutes": 1e300}]),
        "windows[0].duration_minutes",
    ),
    ("gate-unknown", _with("gate", {"stage": "x", "colour": 1}), "gate"),
    ("gate-range", _with("gate", {"stage": "x", "alpha": 0.9}), "gate"),
    ("gate-type", _with("gate", [1]), "gate"),
    ("body-type", [], "body"),  # type: ignore[dict-item]
]


@pytest.mark.parametrize(("name", "document", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_documents_name_the_field(name: str, document: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_document(document)
    assert caught.value.field.startswith(field), caught.value


# -- gates on by default (issue 12) ---------------------------------------------------------------


def test_a_rollout_with_a_previous_release_gets_the_default_gate_and_waits_for_it() -> None:
    spec = spec_from_document({**minimal(), "previous_release_id": "rel-1"})
    assert spec.gate == DEFAULT_GATE and spec.success.require_gate
    stored = spec_to_json(spec)
    assert stored["gate"] == DEFAULT_GATE.to_dict() and stored["success"]["require_gate"]
    assert spec_from_json(stored) == spec


def test_the_gate_can_be_turned_off_explicitly() -> None:
    previous = {**minimal(), "previous_release_id": "rel-1"}
    off = spec_from_document({**previous, "gate": NO_GATE})
    assert off.gate is None and not off.success.require_gate
    assert spec_to_document(off)["gate"] == NO_GATE and spec_from_json(spec_to_json(off)) == off
    unrequired = spec_from_document({**previous, "success": {"require_gate": False}})
    assert unrequired.gate is None and not unrequired.success.require_gate
    advisory = spec_from_document(
        {**previous, "gate": {"stage": "all"}, "success": {"require_gate": False}}
    )
    assert advisory.gate == DEFAULT_GATE and not advisory.success.require_gate
    with pytest.raises(SpecError) as refused:
        spec_from_document({**previous, "gate": NO_GATE, "success": {"require_gate": True}})
    assert refused.value.field == "success.require_gate"


def test_a_given_gate_is_required_unless_the_spec_says_otherwise() -> None:
    gated = spec_from_document({**minimal(), "gate": {"stage": "all", "min_devices": 3}})
    assert gated.gate is not None and gated.gate.min_devices == 3 and gated.success.require_gate


def test_a_first_install_has_nothing_to_compare_with_and_gets_no_default_gate() -> None:
    spec = spec_from_document(minimal())
    assert spec.gate is None and not spec.success.require_gate


def test_a_spec_stored_before_gates_were_on_by_default_keeps_no_gate() -> None:
    stored = spec_to_json(spec_from_document({**minimal(), "previous_release_id": "rel-1"}))
    stored = {**stored, "gate": None, "success": {**stored["success"], "require_gate": False}}
    assert spec_from_json(stored).gate is None
