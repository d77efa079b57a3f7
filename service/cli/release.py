"""`tinyfleet release`: releases on the server (create, upload, publish, list, show), and the local
signing commands (sign a release, assign it to a device, verify it as the device would)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from service.cli import _context
from service.cli._output import JsonOption, console, emit_json, emit_table, fail
from service.cli._release_remote import RELEASE_COLUMNS, release_row
from service.cli._release_remote import register as _register_remote
from service.cli._remote import ProfileOpt, ServerOpt, TokenOpt, connect
from service.trust import ArtifactSpec
from signing.device_ids import device_segment
from signing.fields import CORES

app = typer.Typer(
    help="Releases: firmware and one model per core, installed together or not at all.",
    no_args_is_help=True,
)
_register_remote(app)


@app.command("sign")
def sign(
    files: list[Path] = typer.Argument(
        ..., help="Artifacts; each needs its metadata sidecar FILE.json."
    ),
    release_id: str = typer.Option(..., "--id", help="Release id, e.g. kws-2026-11-25."),
    hardware: list[str] = typer.Option(["mt3620"], help="Hardware ids the release is for."),
    core: list[str] = typer.Option(
        ..., help="Core per file, in order (m4-0, m4-1); one value applies to every file."
    ),
    counter: int = typer.Option(1, min=0, help="Release counter (anti-rollback epoch)."),
    data: Path | None = _context.DataOption,
    json_out: bool = JsonOption,
) -> None:
    """Sign artifacts into the image repository and bind them into one immutable release."""
    if bad := [c for c in core if c not in CORES]:
        fail(f"unknown core {bad[0]!r}; choose from {', '.join(CORES)}", code=2)
    if len(files) == 1:
        pairs = [(files[0], c) for c in core]  # one artifact, installed on each core named
    elif len(core) in (1, len(files)):
        pairs = list(zip(files, core * len(files) if len(core) == 1 else core, strict=True))
    else:
        fail(f"give --core once or once per file ({len(files)} files, {len(core)} cores)", code=2)
    service = _context.trust(data)
    with _context.errors():
        shared = len(pairs) > 1 and len(files) == 1  # one artifact on several cores: built for any
        specs = [
            ArtifactSpec.from_file(f, c, hardware, counter, "any" if shared else None)
            for f, c in pairs
        ]
        manifest = service.sign_release(release_id, counter, hardware, specs, datetime.now(UTC))
    if json_out:
        emit_json(manifest.to_custom())
        return
    emit_table(
        f"release {manifest.release_id} (counter {manifest.release_counter})",
        ["core", "kind", "path", "bytes", "sha256"],
        [(m.core, m.kind, m.path, m.length, m.sha256[:16]) for m in manifest.members],
    )


@app.command("list")
def list_releases(
    local: bool = typer.Option(
        False, "--local", help="List the local image repository instead of the server's."
    ),
    limit: int = typer.Option(100, min=1, max=1000, help="Page size (server listing)."),
    all_pages: bool = typer.Option(False, "--all", help="Follow every page (server listing)."),
    data: Path | None = _context.DataOption,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: bool = JsonOption,
) -> None:
    """Releases on the server; with --local (or --data), those signed in a local repository."""
    if local or data is not None:
        _list_local(data, json_out)
        return
    with connect(server, token, config_profile) as api:
        releases = list(api.pages("/releases", limit=limit, follow=all_pages))
    if json_out:
        emit_json(releases)
        return
    emit_table(f"releases ({len(releases)})", RELEASE_COLUMNS, [release_row(r) for r in releases])


def _list_local(data: Path | None, json_out: bool) -> None:
    service = _context.trust(data)
    with _context.errors():
        releases = service.image().releases()
    if json_out:
        emit_json([r.to_custom() for r in releases])
        return
    emit_table(
        "releases",
        ["id", "counter", "hardware", "members"],
        [
            (
                r.release_id,
                r.release_counter,
                ",".join(r.hardware_ids),
                " ".join(f"{m.core}:{m.path}" for m in r.members),
            )
            for r in releases
        ],
    )


@app.command("assign")
def assign(
    release_id: str = typer.Argument(...),
    device: str = typer.Option(..., help="Device id."),
    hardware: str = typer.Option("mt3620", help="The device's hardware id."),
    data: Path | None = _context.DataOption,
    json_out: bool = JsonOption,
) -> None:
    """Write director metadata telling one device to install a release."""
    service = _context.trust(data)
    with _context.errors():
        assignment = service.assign(device, hardware, release_id, datetime.now(UTC))
    result = {
        "device": assignment.device_id,
        "release": assignment.release_id,
        "director_targets_version": assignment.targets_version,
    }
    if json_out:
        emit_json(result)
        return
    console.print(
        f"{device}: install {release_id} (director targets v{assignment.targets_version})"
    )


@app.command("verify")
def verify(
    device: str = typer.Option(..., help="Device id whose director metadata to verify."),
    hardware: str = typer.Option("mt3620", help="The device's hardware id."),
    state: Path | None = typer.Option(None, help="Device state dir [DATA/devices/ID]."),
    data: Path | None = _context.DataOption,
    json_out: bool = JsonOption,
) -> None:
    """Verify as the device would: both repositories, the Uptane checks, every target byte."""
    service = _context.trust(data)
    with _context.errors():
        verifier = service.device_verifier(
            device, hardware, state or service.settings.devices_dir / device_segment(device)
        )
        release = verifier.check()
        if release is None:
            result = {
                "device": device,
                "update": None,
                "installed": verifier.installed().release_id,
            }
        else:
            verdicts = service.stream_targets(release)
            verifier.commit_install(release, verdicts)
            result = {
                "device": device,
                "update": release.release_id,
                "targets": [
                    {
                        "core": t.core,
                        "path": t.path,
                        "bytes": t.length,
                        "sha256": verdicts[t.path].sha256,
                    }
                    for t in release.targets
                ],
            }
    if json_out:
        emit_json(result)
        return
    if release is None:
        console.print(f"{device}: up to date (installed: {result['installed']})")
        return
    emit_table(
        f"{device}: release {release.release_id} verified",
        ["core", "path", "bytes", "sha256"],
        [(t["core"], t["path"], t["bytes"], str(t["sha256"])[:16]) for t in result["targets"]],
    )
