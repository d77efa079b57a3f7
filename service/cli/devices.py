"""`tinyfleet devices`: the registry as the service sees it (list, show, sync from the hub)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli._output import console, emit_json, emit_table
from service.cli._remote import EXIT_USAGE, JsonOpt, ProfileOpt, ServerOpt, TokenOpt, abort, connect

app = typer.Typer(help="Devices: list, inspect and sync the registry.", no_args_is_help=True)

TagOpt = Annotated[
    list[str] | None,
    typer.Option("--tag", help="Twin tag filter key=value (repeatable; all must match)."),
]


def tag_pairs(tags: list[str] | None) -> list[tuple[str, str]]:
    """`--tag k=v` values as query pairs; a value without '=' is a usage error."""
    pairs: list[tuple[str, str]] = []
    for tag in tags or []:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            abort(f"--tag {tag!r} is not of the form key=value", EXIT_USAGE)
        pairs.append(("tag", f"{key}={value}"))
    return pairs


def device_rows(devices: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            d.get("id"),
            d.get("hardware_id") or "",
            d.get("profile") or "",
            d.get("agent_version") or "",
            d.get("release") or "",
            d.get("last_seen") or "never",
        )
        for d in devices
    ]


DEVICE_COLUMNS = ["id", "hardware", "profile", "agent", "release", "last seen"]


@app.command("list")
def list_devices(
    hardware: Annotated[str | None, typer.Option("--hardware", help="Hardware id.")] = None,
    profile_filter: Annotated[str | None, typer.Option("--profile", help="Device profile.")] = None,
    tag: TagOpt = None,
    agent_version: Annotated[str | None, typer.Option(help="Agent version.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Devices, filtered by hardware, profile, agent version and twin tags."""
    params: list[tuple[str, Any]] = [
        (k, v)
        for k, v in (
            ("hardware_id", hardware),
            ("profile", profile_filter),
            ("agent_version", agent_version),
        )
        if v
    ]
    params += tag_pairs(tag)
    with connect(server, token, config_profile) as api:
        devices = list(api.pages("/devices", params, limit=limit, follow=all_pages))
    if json_out:
        emit_json(devices)
        return
    emit_table(f"devices ({len(devices)})", DEVICE_COLUMNS, device_rows(devices))


@app.command("show")
def show(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One device: its cores, installed release, tags, and its rollout jobs."""
    with connect(server, token, config_profile) as api:
        device = api.get(f"/devices/{device_id}")
        jobs = api.get(f"/devices/{device_id}/jobs")
    items = jobs.get("items", []) if isinstance(jobs, dict) else []
    if json_out:
        emit_json({**device, "jobs": items})
        return
    console.print(f"[bold]{device.get('id')}[/]  hardware {device.get('hardware_id')}")
    for key in ("profile", "agent_version", "release", "last_seen", "created_at"):
        console.print(f"  {key.replace('_', ' ')}: {device.get(key) or '-'}")
    tags = device.get("tags") or {}
    console.print(f"  tags: {' '.join(f'{k}={v}' for k, v in sorted(tags.items())) or '-'}")
    emit_table(
        "cores",
        ["core", "slot", "model", "version", "state"],
        [
            tuple(c.get(k) for k in ("core", "slot", "model_id", "model_version", "state"))
            for c in device.get("cores") or []
        ],
    )
    if items:
        emit_table(
            "jobs",
            ["rollout", "release", "stage", "state", "reason", "attempts", "updated"],
            [
                (
                    j.get("rollout_id"),
                    j.get("release_id"),
                    j.get("stage"),
                    j.get("state"),
                    j.get("reason") or "",
                    j.get("attempts"),
                    j.get("updated_at"),
                )
                for j in items
            ],
        )


@app.command("sync")
def sync(
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pull the hub's device registry and twins into the service now."""
    with connect(server, token, config_profile) as api:
        result = api.post("/devices/sync")
    if json_out:
        emit_json(result)
        return
    console.print(f"synced {result.get('synced', 0)} devices from the hub")
