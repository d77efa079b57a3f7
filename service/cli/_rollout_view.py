"""How a rollout looks on a terminal: per-stage progress bars, totals and the gate verdict.

Pure rendering: a rollout document (the API's JSON) in, a rich renderable out. `rollout status`
draws it once, or redraws it inside a `rich.live.Live` while watching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from service.domain.jobs import ACTIVE_STATES, FAILURE_STATES, JobState

FINAL_STATES = frozenset({"completed", "aborted", "rolled_back"})
_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
_FAILED = frozenset(s.value for s in FAILURE_STATES)
_STATE_STYLE = {
    "completed": "green",
    "running": "cyan",
    "soaking": "cyan",
    "awaiting_approval": "yellow",
    "paused": "yellow",
    "aborted": "red",
    "rolling_back": "red",
    "rolled_back": "red",
}


def tally(counts: Mapping[str, int]) -> dict[str, int]:
    """Job counts folded into what an operator watches: confirmed, in progress, pending, failed."""
    return {
        "confirmed": counts.get(JobState.CONFIRMED.value, 0),
        "in_progress": sum(n for s, n in counts.items() if s in _ACTIVE),
        "pending": counts.get(JobState.PENDING.value, 0),
        "failed": sum(n for s, n in counts.items() if s in _FAILED),
    }


def _styled(state: str) -> str:
    style = _STATE_STYLE.get(state)
    return f"[{style}]{escape(state)}[/]" if style else escape(state)


def headline(rollout: Mapping[str, Any]) -> Text:
    stages = rollout.get("stages") or []
    stage = rollout.get("stage", 0)
    text = Text.from_markup(
        f"[bold]rollout {escape(str(rollout.get('id')))}[/]: release "
        f"{escape(str(rollout.get('release_id')))} → group {escape(str(rollout.get('group_id')))}"
        f"  state {_styled(str(rollout.get('state')))}"
        + (f"  stage {min(int(stage) + 1, len(stages))}/{len(stages)}" if stages else "")
    )
    if rollout.get("reason"):
        text.append(f"  ({rollout['reason']})", style="dim")
    return text


def stages_table(rollout: Mapping[str, Any]) -> Table:
    table = Table(expand=False, box=None, pad_edge=False)
    for column in ("stage", "state", "progress", "confirmed", "in progress", "pending", "failed"):
        table.add_column(column, justify="right" if column not in ("stage", "state") else "left")
    for stage in rollout.get("stages") or []:
        planned = int(stage.get("planned") or 0)
        counts = tally(stage.get("counts") or {})
        bar = ProgressBar(
            total=max(planned, 1),
            completed=min(counts["confirmed"], max(planned, 1)) if planned else 0,
            width=30,
            complete_style="red" if counts["failed"] else "green",
        )
        table.add_row(
            f"{stage.get('index', 0) + 1}. {escape(str(stage.get('name')))}",
            _styled(str(stage.get("state"))),
            bar,
            f"{counts['confirmed']}/{planned}",
            str(counts["in_progress"]),
            str(counts["pending"]),
            Text(str(counts["failed"]), style="red" if counts["failed"] else ""),
        )
    return table


def gate_lines(rollout: Mapping[str, Any]) -> list[RenderableType]:
    gate = rollout.get("gate")
    if not gate:
        return []
    verdict = str(gate.get("verdict"))
    style = {"pass": "green", "fail": "red"}.get(verdict.lower(), "yellow")
    head = Text.from_markup(f"gate: [{style}]{escape(verdict)}[/]")
    if gate.get("reason"):
        head.append(f"  {gate['reason']}", style="dim")
    numbers = gate.get("numbers") or {}
    if not numbers:
        return [head]
    figures = Table(box=None, show_header=False, pad_edge=False)
    figures.add_column("metric", style="dim")
    figures.add_column("value", justify="right")
    for name, value in sorted(numbers.items()):
        figures.add_row(f"  {name}", f"{value:.4g}" if isinstance(value, float) else str(value))
    return [head, figures]


def decision_text(gate: Mapping[str, Any]) -> str:
    """One line for the verdict that decided a stage: outcome, how it decided, the stage's
    soaked devices and both cohorts' sizes, then the reason."""
    c = gate.get("cohorts") or {}

    def n(name: str) -> str:
        value = c.get(name)
        return "?" if value is None else f"{float(value):g}"

    return (
        f"{gate.get('verdict')} ({gate.get('decided')}): {n('stage_soaked')} of "
        f"{n('stage_devices')} stage devices soaked; canary {n('canary_devices')} devices, "
        f"{n('canary_inferences')} inferences vs control {n('control_devices')} devices, "
        f"{n('control_inferences')} inferences; {gate.get('reason', '')}"
    )


def decision_lines(rollout: Mapping[str, Any]) -> list[RenderableType]:
    """The verdict stored with each stage it decided (what the stage moved on)."""
    lines: list[RenderableType] = []
    for stage in rollout.get("stages") or []:
        gate = stage.get("gate")
        if not gate:
            continue
        style = {"pass": "green", "fail": "red"}.get(str(gate.get("verdict")), "yellow")
        line = Text(f"{stage.get('index', 0) + 1}. {stage.get('name')} gate: ")
        line.append(decision_text(gate), style=style)
        lines.append(line)
    return lines


def render(rollout: Mapping[str, Any]) -> RenderableType:
    totals = tally(rollout.get("totals") or {})
    summary = Text(
        f"total: {totals['confirmed']} confirmed, {totals['in_progress']} in progress, "
        f"{totals['pending']} pending, {totals['failed']} failed",
        style="dim",
    )
    back = rollout.get("rollback") or {}
    lines: list[RenderableType] = [headline(rollout), stages_table(rollout), summary]
    if back:
        b = tally(back)
        lines.append(
            Text(
                f"rollback to {rollout.get('previous_release_id')}: {b['confirmed']} confirmed, "
                f"{b['in_progress']} in progress, {b['pending']} pending, {b['failed']} failed",
                style="red",
            )
        )
    return Group(*lines, *decision_lines(rollout), *gate_lines(rollout))


def snapshot(rollout: Mapping[str, Any]) -> dict[str, Any]:
    """The figures `status --json --watch` prints one line of per change."""
    return {
        "id": rollout.get("id"),
        "state": rollout.get("state"),
        "stage": rollout.get("stage"),
        "reason": rollout.get("reason"),
        "totals": tally(rollout.get("totals") or {}),
        "rollback": tally(rollout.get("rollback") or {}),
        "stages": [
            {
                "name": s.get("name"),
                "state": s.get("state"),
                "planned": s.get("planned"),
                **tally(s.get("counts") or {}),
                "gate": s.get("gate"),
            }
            for s in rollout.get("stages") or []
        ],
        "gate": rollout.get("gate"),
    }
