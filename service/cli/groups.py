"""`tinyfleet groups`: device groups by twin tag or by query; membership is dynamic."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
from service.cli.devices import DEVICE_COLUMNS, device_rows

app = typer.Typer(help="Device groups: by twin tag or by query.", no_args_is_help=True)

GROUP_COLUMNS = ["id", "name", "kind", "selector", "time zone", "production", "members"]


def group_row(group: dict[str, Any]) -> tuple[Any, ...]:
    return (
        group.get("id"),
        group.get("name"),
        group.get("kind"),
        group.get("selector"),
        group.get("time_zone") or "UTC",
        "yes" if group.get("production") else "no",
        group.get("members", ""),
    )


@app.command("list")
def list_groups(
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every group, with its member count."""
    with connect(server, token, config_profile) as api:
        groups = api.get("/groups").get("items", [])
    if json_out:
        emit_json(groups)
        return
    emit_table(f"groups ({len(groups)})", GROUP_COLUMNS, [group_row(g) for g in groups])


@app.command("show")
def show(
    group_id: Annotated[str, typer.Argument(help="Group id.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One group."""
    with connect(server, token, config_profile) as api:
        group = api.get(f"/groups/{group_id}")
    if json_out:
        emit_json(group)
        return
    emit_table(f"group {group_id}", GROUP_COLUMNS, [group_row(group)])


@app.command("put")
def put(
    group_id: Annotated[str, typer.Argument(help="Group id.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Members: devices whose twin tag key=value.")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", help='Members: "tags.KEY=VALUE and field=value ...".'),
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone for windows.")] = "UTC",
    production: Annotated[
        bool,
        typer.Option(
            "--production",
            help="Rollouts reaching its devices need a second operator (admin only).",
        ),
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or replace a group, selected by --tag or by --query (exactly one)."""
    if (tag is None) == (query is None):
        abort("give exactly one of --tag key=value or --query '...'", EXIT_USAGE)
    if tag is not None and "=" not in tag:
        abort(f"--tag {tag!r} is not of the form key=value", EXIT_USAGE)
    body = {
        "name": name or group_id,
        "kind": "tag" if tag is not None else "query",
        "selector": tag if tag is not None else query,
        "time_zone": tz,
        "production": production,
    }
    with connect(server, token, config_profile) as api:
        group = api.put(f"/groups/{group_id}", body)
    if json_out:
        emit_json(group)
        return
    emit_table(f"group {group_id} saved", GROUP_COLUMNS, [group_row(group)])


@app.command("delete")
def delete(
    group_id: Annotated[str, typer.Argument(help="Group id.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete a group (refused while a rollout uses it)."""
    with connect(server, token, config_profile) as api:
        api.delete(f"/groups/{group_id}")
    if json_out:
        emit_json({"deleted": group_id})
        return
    console.print(f"group {group_id} deleted")


@app.command("members")
def members(
    group_id: Annotated[str, typer.Argument(help="Group id.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The devices in a group now."""
    with connect(server, token, config_profile) as api:
        devices = list(api.pages(f"/groups/{group_id}/members", limit=limit, follow=all_pages))
    if json_out:
        emit_json(devices)
        return
    emit_table(f"group {group_id}: {len(devices)} devices", DEVICE_COLUMNS, device_rows(devices))
