"""`tinyfleet fleet rehearse`: a gated rollout rehearsed on a simulated fleet of real devices."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from service.cli._output import console, fail
from service.cli._rehearsal import Rehearsal, report, run

app = typer.Typer(help="Simulated fleets at scale.", no_args_is_help=True)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        fail(f"--devices must list fleet sizes of 2 or more, e.g. 1000,3000,10000 (not {text!r})")
    return sizes


@app.command()
def rehearse(
    devices: str = typer.Option("500", "--devices", help="Fleet sizes, e.g. 1000,3000,10000."),
    hosts: int = typer.Option(0, "--hosts", help="Fleet host processes (0: one per 125 devices)."),
    period: float = typer.Option(1.0, "--inference-period", help="Seconds between inferences."),
    cores: str = typer.Option("inprocess", "--cores", help="inprocess or process."),
    summaries: float = typer.Option(
        0.0, "--summaries", help="Send telemetry summaries of this many seconds (0: raw rows)."
    ),
    flush: float = typer.Option(0.0, "--flush", help="Agents' telemetry flush interval (s)."),
    liveness: float = typer.Option(5.0, "--liveness", help="Twin liveness refresh interval (s)."),
    heartbeat: float = typer.Option(5.0, "--heartbeat", help="Each core's heartbeat period (s)."),
    soak: int = typer.Option(20, "--soak", help="Soak seconds per stage."),
    faults: bool = typer.Option(
        False, "--faults", help="Cut 10 % of links mid-download; restart service and hub."
    ),
    data: Path | None = typer.Option(None, "--data", help="Folder for state (default: temp)."),
) -> None:
    """Provision a fleet, install v1, roll v2 out in three gated stages, and report how every
    cost grows with the fleet (one run per size, smallest first)."""
    if hosts < 0 or cores not in ("inprocess", "process") or min(period, heartbeat) <= 0:
        fail("--hosts must be 0 (automatic) or more, --cores inprocess or process, periods above 0")
    plan = Rehearsal(
        hosts=hosts,
        period_s=period,
        cores=cores,
        summary_s=summaries,
        flush_s=flush,
        liveness_s=liveness,
        heartbeat_s=heartbeat,
        soak_s=soak,
        faults=faults,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="tinyfleet-rehearse-") as scratch:
        root = data or Path(scratch)
        for size in sorted(_sizes(devices)):
            results.append(run(size, root / f"n{size}", plan))
            for line in report(results, plan):
                console.print(line)
