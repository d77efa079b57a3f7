"""`tinyfleet audit`: the append-only, hash-chained log of every change."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.cli._output import console, emit_json, emit_table
from service.cli._remote import (
    EXIT_REFUSED,
    JsonOpt,
    ProfileOpt,
    ServerOpt,
    TokenOpt,
    abort,
    connect,
)

app = typer.Typer(help="The audit log: list entries, verify the hash chain.", no_args_is_help=True)


def _details(details: Any) -> str:
    text = json.dumps(details, sort_keys=True, default=str) if details else ""
    return text if len(text) <= 60 else text[:57] + "..."


@app.command("list")
def list_entries(
    after_seq: Annotated[int | None, typer.Option(help="Only entries after this seq.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries per page.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Every entry from --after-seq.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Audit entries in order: who did what to which subject."""
    entries: list[dict[str, Any]] = []
    with connect(server, token, config_profile) as api:
        cursor = after_seq
        while True:
            params: list[tuple[str, Any]] = [("limit", limit)]
            if cursor is not None:
                params.append(("after_seq", cursor))
            page = api.get("/audit", params).get("items", [])
            entries += page
            if not all_pages or len(page) < limit:
                break
            cursor = page[-1]["seq"]
    if json_out:
        emit_json(entries)
        return
    emit_table(
        f"audit ({len(entries)} entries)",
        ["seq", "at", "actor", "action", "subject", "details"],
        [
            (
                e.get("seq"),
                e.get("at"),
                e.get("actor"),
                e.get("action"),
                e.get("subject"),
                _details(e.get("details")),
            )
            for e in entries
        ],
    )


@app.command("verify")
def verify(
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the hash chain end to end; exit 1 when it is broken."""
    with connect(server, token, config_profile) as api:
        result = api.get("/audit/verify")
    ok = bool(result.get("ok"))
    if json_out:
        emit_json(result)
        if not ok:
            raise typer.Exit(EXIT_REFUSED)
        return
    if ok:
        console.print(f"audit chain intact: {result.get('checked', 0)} entries checked")
        return
    abort(
        f"audit chain broken at seq {result.get('first_broken_seq')}: {result.get('reason')}",
        EXIT_REFUSED,
        details=[f"{result.get('checked', 0)} entries checked"],
    )
