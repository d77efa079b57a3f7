"""The rollout view: what `rollout status` draws from a rollout document."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from service.cli._rollout_view import render, snapshot, tally

ROLLOUT: dict[str, Any] = {
    "id": "ro-9",
    "release_id": "kws-2",
    "group_id": "lab",
    "state": "soaking",
    "stage": 1,
    "reason": "",
    "stages": [
        {
            "index": 0,
            "name": "canary",
            "state": "completed",
            "planned": 3,
            "counts": {"confirmed": 3},
        },
        {
            "index": 1,
            "name": "rest",
            "state": "soaking",
            "planned": 97,
            "counts": {
                "confirmed": 40,
                "soaking": 20,
                "downloading": 10,
                "pending": 25,
                "timed_out": 1,
                "reverted": 1,
            },
        },
    ],
    "totals": {
        "confirmed": 43,
        "soaking": 20,
        "downloading": 10,
        "pending": 25,
        "timed_out": 1,
        "reverted": 1,
    },
    "gate": {
        "verdict": "fail",
        "reason": "latency regressed [p95]",
        "numbers": {"latency_p95_ratio": 1.7, "devices": 40},
    },
}


def _text(rollout: dict[str, Any]) -> str:
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(render(rollout))
    return console.export_text()


def test_tally_folds_job_states_into_what_operators_watch() -> None:
    assert tally(ROLLOUT["totals"]) == {
        "confirmed": 43,
        "in_progress": 30,
        "pending": 25,
        "failed": 2,
    }
    assert tally({}) == {"confirmed": 0, "in_progress": 0, "pending": 0, "failed": 0}


def test_render_shows_stages_counts_and_the_gate_figures() -> None:
    text = _text(ROLLOUT)
    assert "rollout ro-9" in text and "stage 2/2" in text
    assert "3/3" in text and "40/97" in text
    assert "latency regressed [p95]" in text  # server text is not read as markup
    assert "latency_p95_ratio" in text and "1.7" in text


def test_render_survives_a_rollout_without_stages_or_gate() -> None:
    bare = {"id": "ro-0", "state": "draft", "stages": [], "totals": {}, "gate": None}
    assert "state draft" in _text(bare)


def test_snapshot_is_json_friendly() -> None:
    figures = snapshot(ROLLOUT)
    assert figures["stages"][1] == {
        "name": "rest",
        "state": "soaking",
        "planned": 97,
        "confirmed": 40,
        "in_progress": 30,
        "pending": 25,
        "failed": 2,
        "gate": None,
    }
    assert figures["gate"]["verdict"] == "fail"


def test_render_shows_the_verdict_that_decided_each_stage() -> None:
    decided = {
        "verdict": "pass",
        "reason": "every model within its limits (2 judged)",
        "numbers": {"canary_inferences": 3200.0},
        "cohorts": {
            "stage_soaked": 3.0,
            "stage_devices": 3.0,
            "canary_devices": 3.0,
            "canary_inferences": 3200.0,
            "control_devices": 15.0,
            "control_inferences": 9000.0,
        },
        "decided": "advanced",
        "at": "2026-12-04T04:00:00+00:00",
    }
    first, rest = ROLLOUT["stages"]
    rollout = {**ROLLOUT, "stages": [{**first, "gate": decided}, rest]}
    text = _text(rollout)
    assert "1. canary gate: pass (advanced): 3 of 3 stage devices soaked" in text
    assert "canary 3 devices, 3200 inferences vs control 15 devices, 9000 inferences" in text
    assert snapshot(rollout)["stages"][0]["gate"] == decided
