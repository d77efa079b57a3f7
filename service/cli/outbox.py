"""`tinyfleet outbox`: the messages the dispatcher could not deliver (retrying or parked), and
an admin's retry or drop of one."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli._output import console, emit_json, emit_table
from service.cli._remote import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, connect

app = typer.Typer(
    help="Undelivered outbox messages: list the failing ones, retry or drop a parked one.",
    no_args_is_help=True,
)
MessageArg = Annotated[int, typer.Argument(min=1, help="The outbox message id.")]


def _subject(message: dict[str, Any]) -> str:
    payload = message.get("payload") or {}
    return str(payload.get("device_id") or payload.get("rollout_id") or "")


def _error(message: dict[str, Any]) -> str:
    text = str(message.get("last_error") or "")
    return text if len(text) <= 60 else text[:57] + "..."


@app.command("list")
def list_messages(
    state: Annotated[str | None, typer.Option(help="Only `retrying` or `parked` messages.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Messages per page.")] = 100,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Messages that failed at least once, oldest first, with their last error."""
    params: list[tuple[str, Any]] = [("limit", limit)]
    if state is not None:
        params.append(("state", state))
    with connect(server, token, config_profile) as api:
        items: list[dict[str, Any]] = api.get("/outbox", params).get("items", [])
    if json_out:
        emit_json(items)
        return
    emit_table(
        f"outbox ({len(items)} failing)",
        ["id", "kind", "state", "attempts", "subject", "next attempt", "last error"],
        [
            (
                m.get("id"),
                m.get("kind"),
                m.get("state"),
                m.get("attempts"),
                _subject(m),
                m.get("next_attempt_at") or "",
                _error(m),
            )
            for m in items
        ],
    )


def _act(
    action: str, message_id: int, server: Any, token: Any, profile: Any, json_out: bool
) -> None:
    with connect(server, token, profile) as api:
        message = api.post(f"/outbox/{message_id}/{action}")
    if json_out:
        emit_json(message)
        return
    console.print(f"outbox message {message_id} ({message.get('kind')}): {message.get('state')}")


@app.command("retry")
def retry(
    message_id: MessageArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deliver a failed message again now (fix its cause first), with a fresh attempt count."""
    _act("retry", message_id, server, token, config_profile, json_out)


@app.command("drop")
def drop(
    message_id: MessageArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Give up on a failed message: it is never delivered (the audit log keeps it)."""
    _act("drop", message_id, server, token, config_profile, json_out)
