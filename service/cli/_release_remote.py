"""The server side of `tinyfleet release`: create a draft, upload artifacts, publish, show.

Kept apart from `release.py` (the local signing commands); `register` adds these commands to
its Typer app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from service.cli._output import console, emit_json, emit_table, err_console
from service.cli._remote import (
    EXIT_USAGE,
    JsonOpt,
    ProfileOpt,
    ServerOpt,
    TokenOpt,
    abort,
    connect,
)
from signing.fields import TARGET_CORES

RELEASE_COLUMNS = ["id", "status", "counter", "hardware", "members", "created"]

ReleaseArg = Annotated[str, typer.Argument(help="Release id.")]


def release_row(release: dict[str, Any]) -> tuple[Any, ...]:
    members = " ".join(
        f"{m.get('core')}:{m.get('model_id') or m.get('kind') or '?'}"
        + (f"@{m['version']}" if m.get("version") else "")
        for m in release.get("members") or []
    )
    return (
        release.get("id"),
        release.get("status"),
        release.get("counter"),
        ",".join(release.get("hardware_ids") or []),
        members or "-",
        release.get("created_at") or "",
    )


def _members_table(release: dict[str, Any]) -> None:
    rows = []
    for m in release.get("members") or []:
        checks = m.get("admission") or []
        failed = [c.get("name") for c in checks if not c.get("ok")]
        admission = "-" if not checks else ("ok" if not failed else "FAILED: " + ",".join(failed))
        sha = str(m.get("sha256") or "")[:16]
        rows.append((m.get("core"), m.get("kind"), m.get("path"), m.get("length"), sha, admission))
    emit_table(
        f"release {release.get('id')} ({release.get('status')}, counter {release.get('counter')})",
        ["core", "kind", "path", "bytes", "sha256", "admission"],
        rows,
    )


def _checks_table(title: str, checks: list[dict[str, Any]]) -> None:
    if checks:
        emit_table(
            title,
            ["check", "ok", "detail"],
            [(c.get("name"), "yes" if c.get("ok") else "NO", c.get("detail", "")) for c in checks],
        )


def create(
    release_id: ReleaseArg,
    hardware: Annotated[list[str], typer.Option(help="Hardware ids (repeatable).")] = ["mt3620"],  # noqa: B006
    counter: Annotated[int, typer.Option(min=0, help="Release counter (anti-rollback).")] = 1,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a draft release on the server; then upload its artifacts and publish it."""
    body = {
        "id": release_id,
        "hardware_ids": hardware,
        "counter": counter,
        "description": description,
    }
    with connect(server, token, config_profile) as api:
        release = api.post("/releases", body)
    if json_out:
        emit_json(release)
        return
    emit_table("draft release created", RELEASE_COLUMNS, [release_row(release)])


def upload(
    release_id: ReleaseArg,
    artifact: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="The artifact file."),
    ],
    core: Annotated[str, typer.Option(help=f"Target core: {', '.join(TARGET_CORES)}.")],
    metadata: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Metadata sidecar (default: ARTIFACT with .json)."
        ),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stream one artifact and its metadata into a draft release; the server runs admission."""
    if core not in TARGET_CORES:
        abort(f"unknown core {core!r}; choose from {', '.join(TARGET_CORES)}", EXIT_USAGE)
    sidecar = metadata or artifact.with_suffix(".json")
    try:
        document = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        abort(f"no metadata sidecar {sidecar}", EXIT_USAGE, hint="give --metadata FILE.json")
    except (OSError, ValueError) as exc:
        abort(f"cannot read metadata {sidecar}: {exc}", EXIT_USAGE)
    payload = json.dumps(document).encode()
    size = artifact.stat().st_size
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=json_out,
    )
    with progress, connect(server, token, config_profile) as api:
        task = progress.add_task(f"{artifact.name} → {release_id}/{core}", total=size)
        member = api.upload(
            f"/releases/{release_id}/artifacts/{core}",
            artifact,
            payload,
            lambda sent: progress.advance(task, sent),
        )
    if json_out:
        emit_json(member)
        return
    console.print(
        f"uploaded {member.get('path') or artifact.name} to {release_id} core {core}: "
        f"{member.get('length', size)} bytes, sha256 {str(member.get('sha256', ''))[:16]}"
    )
    _checks_table("admission", member.get("admission") or [])


def publish(
    release_id: ReleaseArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sign the release into the image repository and publish it; it is immutable from now on."""
    with connect(server, token, config_profile) as api:
        release = api.post(f"/releases/{release_id}/publish")
    if json_out:
        emit_json(release)
        return
    _members_table(release)
    console.print(f"release {release_id} published")


def show(
    release_id: ReleaseArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One release on the server: its members and their admission checks."""
    with connect(server, token, config_profile) as api:
        release = api.get(f"/releases/{release_id}")
    if json_out:
        emit_json(release)
        return
    _members_table(release)
    if release.get("description"):
        console.print(f"description: {release['description']}", markup=False)
    for member in release.get("members") or []:
        _checks_table(f"admission {member.get('core')}", member.get("admission") or [])
    for key in ("created_by", "created_at"):
        if release.get(key):
            console.print(f"{key.replace('_', ' ')}: {release[key]}")


def register(app: typer.Typer) -> None:
    app.command("create")(create)
    app.command("upload")(upload)
    app.command("publish")(publish)
    app.command("show")(show)
