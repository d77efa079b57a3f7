"""`tinyfleet repo`: create the image repository and the director, show them, keep them fresh."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from service.cli import _context
from service.cli._output import JsonOption, console, emit_json, emit_table

app = typer.Typer(help="The TUF image repository and the Uptane director.", no_args_is_help=True)


@app.command("init")
def init(data: Path | None = _context.DataOption, json_out: bool = JsonOption) -> None:
    """Publish root, targets (with its delegations), snapshot and timestamp of both repositories."""
    service = _context.trust(data)
    with _context.errors():
        service.init_repos(datetime.now(UTC))
    result = {
        "store": str(service.settings.repo_dir),
        "image_root_version": 1,
        "director_root_version": 1,
    }
    if json_out:
        emit_json(result)
        return
    console.print(f"image repository and director published in {service.settings.repo_dir}")
    console.print("devices pin image/metadata/1.root.json and director/root/metadata/1.root.json")


@app.command("status")
def status(data: Path | None = _context.DataOption, json_out: bool = JsonOption) -> None:
    """Versions, expiry, keys and thresholds of the image repository's roles."""
    service = _context.trust(data)
    with _context.errors():
        rows = service.status()
    if json_out:
        emit_json(
            [
                {
                    "repo": r.repo,
                    "role": r.role,
                    "version": r.version,
                    "expires": r.expires.isoformat(),
                    "keyids": list(r.keyids),
                    "threshold": r.threshold,
                }
                for r in rows
            ]
        )
        return
    emit_table(
        "image repository",
        ["role", "version", "expires", "keys", "threshold"],
        [(r.role, r.version, r.expires.isoformat(), len(r.keyids), r.threshold) for r in rows],
    )


@app.command("refresh")
def refresh(
    data: Path | None = _context.DataOption,
    every: int = typer.Option(0, min=0, help="Keep running, refreshing every N seconds (0: once)."),
    json_out: bool = JsonOption,
) -> None:
    """Re-sign whatever expires soon (run it on a schedule, e.g. hourly), so no device freezes."""
    service = _context.trust(data)
    while True:
        with _context.errors():
            renewed = service.refresh(datetime.now(UTC))
        if json_out:
            emit_json(renewed)
        else:
            console.print(
                f"image: {', '.join(renewed['image']) or 'nothing due'}; "
                f"director: {len(renewed['director'])} device(s) re-signed"
            )
        if not every:
            return
        time.sleep(every)
