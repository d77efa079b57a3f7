"""`tinyfleet rollout`: staged rollouts of a release to a device group, and their live status."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from service.cli._output import console, emit_json, emit_table
from service.cli._remote import (
    EXIT_USAGE,
    JsonOpt,
    ProfileOpt,
    ServerOpt,
    TokenOpt,
    abort,
    connect,
)
from service.cli._rollout_view import FINAL_STATES, render, snapshot, tally

app = typer.Typer(
    help="Rollouts: staged, gated delivery of a release to a group.", no_args_is_help=True
)


class Advance(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"


class FailureAction(StrEnum):
    PAUSE = "pause"
    ABORT = "abort"
    ROLLBACK = "rollback"


RolloutArg = Annotated[str, typer.Argument(help="Rollout id.")]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """`90`, `30s`, `5m`, `1h30m`, `2d` as seconds; a ValueError otherwise."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_stage(text: str) -> dict[str, Any]:
    """`name:10%:5m` (percent) or `name:25:5m` (device count); the soak may be left out."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"stage {text!r} is not name:PERCENT%:SOAK or name:COUNT:SOAK")
    name, size = parts[0], parts[1].strip()
    stage: dict[str, Any] = {"name": name}
    try:
        if size.endswith("%"):
            stage["percent"] = float(size[:-1])
        else:
            stage["count"] = int(size)
    except ValueError as exc:
        raise ValueError(f"stage {text!r}: {size!r} is not a percent (10%) or a count") from exc
    stage["soak_seconds"] = parse_duration(parts[2]) if len(parts) == 3 else 0.0
    return stage


def parse_window(text: str) -> dict[str, Any]:
    """`CRON;DURATION`, e.g. `0 2 * * 1-5;2h`: a maintenance window opening at each cron match."""
    cron, sep, duration = text.rpartition(";")
    if not sep or not cron.strip():
        raise ValueError(f"window {text!r} is not 'CRON;DURATION' (e.g. '0 2 * * *;2h')")
    return {"cron": cron.strip(), "duration_minutes": parse_duration(duration) / 60}


def parse_time(text: str) -> str:
    """An ISO 8601 time (`Z` or an offset; UTC when it has neither) as an ISO string in UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2026-12-01T02:00:00Z") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _usage(parse: Callable[[str], Any], value: str) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        abort(str(exc), EXIT_USAGE)


ROLLOUT_COLUMNS = ["id", "release", "group", "state", "stage", "confirmed", "failed", "updated"]


def rollout_row(r: dict[str, Any]) -> tuple[Any, ...]:
    totals = tally(r.get("totals") or {})
    stages = r.get("stages") or []
    stage = f"{min(int(r.get('stage', 0)) + 1, len(stages))}/{len(stages)}" if stages else "-"
    return (
        r.get("id"),
        r.get("release_id"),
        r.get("group_id"),
        r.get("state"),
        stage,
        totals["confirmed"],
        totals["failed"],
        r.get("updated_at") or "",
    )


@app.command("create")
def create(
    rollout_id: RolloutArg,
    release: Annotated[str, typer.Option("--release", help="Release to roll out.")],
    group: Annotated[str, typer.Option("--group", help="Target device group.")],
    stage: Annotated[
        list[str],
        typer.Option("--stage", help="name:10%:5m or name:25:1h (percent or count, soak)."),
    ],
    previous: Annotated[
        str | None, typer.Option("--previous", help="Release to roll back to.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Success threshold percent to advance a stage.")
    ] = None,
    advance: Annotated[
        Advance | None, typer.Option(help="auto, or approval (an operator approves each stage).")
    ] = None,
    require_gate: Annotated[
        bool,
        typer.Option(
            "--require-gate/--no-require-gate",
            help="Wait for a PASS health verdict to advance (on by default; off with --no-gate).",
        ),
    ] = True,
    failure_threshold: Annotated[
        float | None, typer.Option(help="Failure percent that triggers the failure action.")
    ] = None,
    failure_min_devices: Annotated[
        int | None, typer.Option(help="...and at least this many failed devices.")
    ] = None,
    failure_action: Annotated[
        FailureAction | None, typer.Option(help="What the failure threshold triggers.")
    ] = None,
    gate_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Health gate policy (JSON); default: the default gate.",
        ),
    ] = None,
    no_gate: Annotated[
        bool, typer.Option("--no-gate", help="No health gate (stages advance on installs alone).")
    ] = False,
    start_at: Annotated[
        str | None, typer.Option(help="Scheduled start, ISO 8601 (UTC unless it says).")
    ] = None,
    window: Annotated[
        list[str] | None, typer.Option("--window", help="Maintenance window 'CRON;DURATION'.")
    ] = None,
    in_progress_timeout: Annotated[
        str | None, typer.Option(help="Per-device in-progress timeout, e.g. 30m.")
    ] = None,
    max_retries: Annotated[int | None, typer.Option(help="Retries per device.")] = None,
    rate: Annotated[int | None, typer.Option(help="Offers per minute to start with.")] = None,
    rate_max: Annotated[int | None, typer.Option(help="Offers per minute at most.")] = None,
    rate_factor: Annotated[
        float | None, typer.Option(help="Rate multiplier per --rate-every devices.")
    ] = None,
    rate_every: Annotated[int | None, typer.Option(help="Devices per rate increase.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a rollout (a draft until `rollout start`)."""
    body: dict[str, Any] = {
        "id": rollout_id,
        "release_id": release,
        "group_id": group,
        "stages": [_usage(parse_stage, s) for s in stage],
    }
    if previous:
        body["previous_release_id"] = previous
    success = _present(threshold_percent=threshold, advance=advance and advance.value)
    if not require_gate:
        success["require_gate"] = False
    failure = _present(
        threshold_percent=failure_threshold,
        min_devices=failure_min_devices,
        action=failure_action and failure_action.value,
    )
    timeout = _usage(parse_duration, in_progress_timeout) if in_progress_timeout else None
    retry = _present(in_progress_timeout_seconds=timeout, max_retries=max_retries)
    rates = _present(
        base_per_minute=rate, max_per_minute=rate_max, factor=rate_factor, every=rate_every
    )
    parts = {"success": success, "failure": failure, "retry": retry, "rate": rates}
    body.update({key: part for key, part in parts.items() if part})
    if start_at is not None:
        body["start_at"] = _usage(parse_time, start_at)
    if window:
        body["windows"] = [_usage(parse_window, w) for w in window]
    if no_gate and gate_file is not None:
        abort("give --gate-file or --no-gate, not both", EXIT_USAGE)
    if no_gate:
        body["gate"] = "none"
    elif gate_file is not None:
        try:
            body["gate"] = json.loads(gate_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            abort(f"cannot read gate policy {gate_file}: {exc}", EXIT_USAGE)
    with connect(server, token, config_profile) as api:
        rollout = api.post("/rollouts", body)
    if json_out:
        emit_json(rollout)
        return
    console.print(render(rollout))
    console.print(f"created; start it with: tinyfleet rollout start {rollout_id}")


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("list")
def list_rollouts(
    state: Annotated[str | None, typer.Option(help="Only rollouts in this state.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only this group's.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rollouts, filtered by state and group."""
    params = _present(state=state, group_id=group)
    with connect(server, token, config_profile) as api:
        rollouts = api.get("/rollouts", params).get("items", [])
    if json_out:
        emit_json(rollouts)
        return
    emit_table(f"rollouts ({len(rollouts)})", ROLLOUT_COLUMNS, [rollout_row(r) for r in rollouts])


@app.command("show")
def show(
    rollout_id: RolloutArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One rollout: its spec, stages, counts and approvals."""
    with connect(server, token, config_profile) as api:
        rollout = api.get(f"/rollouts/{rollout_id}")
    if json_out:
        emit_json(rollout)
        return
    console.print(render(rollout))
    if rollout.get("approvals"):
        console.print(f"approvals: {', '.join(rollout['approvals'])}", markup=False)
    console.print_json(data=rollout.get("spec") or {})


@app.command("jobs")
def jobs(
    rollout_id: RolloutArg,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The rollout's device jobs."""
    params = [("state", state)] if state else []
    with connect(server, token, config_profile) as api:
        items = list(
            api.pages(f"/rollouts/{rollout_id}/jobs", params, limit=limit, follow=all_pages)
        )
    if json_out:
        emit_json(items)
        return
    emit_table(
        f"rollout {rollout_id}: {len(items)} jobs",
        ["device", "stage", "state", "reason", "attempts", "updated"],
        [
            tuple(
                j.get(k) or ""
                for k in ("device_id", "stage", "state", "reason", "attempts", "updated_at")
            )
            for j in items
        ],
    )


def _command(name: str, doc: str) -> None:
    def run(
        rollout_id: RolloutArg,
        reason: Annotated[str | None, typer.Option(help="Why; kept in the audit log.")] = None,
        server: ServerOpt = None,
        token: TokenOpt = None,
        config_profile: ProfileOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        body = _present(command=name, reason=reason)
        with connect(server, token, config_profile) as api:
            rollout = api.post(f"/rollouts/{rollout_id}/commands", body)
        if json_out:
            emit_json(rollout)
            return
        console.print(render(rollout))

    run.__doc__ = doc
    app.command(name)(run)


for _name, _doc in (
    ("start", "Start a draft rollout (or schedule it, if it has a start time)."),
    ("pause", "Pause: no new offers; devices already updating finish."),
    ("resume", "Resume a paused rollout."),
    ("abort", "Abort: cancel every pending offer; installed devices keep the release."),
    ("rollback", "Roll the group back to the previous release."),
    ("approve", "Approve the next stage (or the start or resume, for production devices)."),
    ("next-stage", "Advance to the next stage now, without waiting for the soak."),
):
    _command(_name, _doc)


@app.command("status")
def status(
    rollout_id: RolloutArg,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until the rollout ends (Ctrl-C stops).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between refreshes when watching.")
    ] = 2.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Progress per stage (confirmed, in progress, pending, failed) and the gate verdict.

    With --watch, redraw live until the rollout completes, aborts or is rolled back; with --json
    and --watch, print one JSON line per change.
    """
    with connect(server, token, config_profile) as api:

        def fetch() -> dict[str, Any]:
            document: dict[str, Any] = api.get(f"/rollouts/{rollout_id}")
            return document

        rollout = fetch()
        if not watch:
            if json_out:
                emit_json(snapshot(rollout))
            else:
                console.print(render(rollout))
            return
        try:
            if json_out:
                _watch_json(fetch, rollout, interval)
            else:
                _watch_live(fetch, rollout, interval)
        except KeyboardInterrupt:
            if not json_out:
                console.print("stopped watching; the rollout goes on")


def _watch_json(fetch: Callable[[], dict[str, Any]], rollout: dict[str, Any], every: float) -> None:
    last: dict[str, Any] | None = None
    while True:
        figures = snapshot(rollout)
        if figures != last:
            console.file.write(json.dumps(figures, sort_keys=True, default=str) + "\n")
            console.file.flush()
            last = figures
        if rollout.get("state") in FINAL_STATES:
            return
        time.sleep(every)
        rollout = fetch()


def _watch_live(fetch: Callable[[], dict[str, Any]], rollout: dict[str, Any], every: float) -> None:
    with Live(render(rollout), console=console, auto_refresh=False, transient=False) as live:
        while rollout.get("state") not in FINAL_STATES:
            time.sleep(every)
            rollout = fetch()
            live.update(render(rollout), refresh=True)
    console.print(f"rollout {rollout.get('id')} {rollout.get('state')}")
