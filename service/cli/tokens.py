"""`tinyfleet tokens`: API tokens and their roles (admin only)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from service.cli._output import console, emit_json, emit_table
from service.cli._remote import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, connect

app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    RELEASE_SIGNER = "release-signer"
    ADMIN = "admin"


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Token name; the actor in the audit log.")],
    role: Annotated[Role, typer.Option("--role", help="What the token may do.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once and never again."""
    with connect(server, token, config_profile) as api:
        created = api.post("/tokens", {"name": name, "role": role.value})
    if json_out:
        emit_json(created)
        return
    console.print(f"token {created.get('id')} ({created.get('name')}, {created.get('role')})")
    console.print("secret (shown once, store it now):", style="bold")
    console.print(str(created.get("secret")), markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_tokens(
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every token (never their secrets)."""
    with connect(server, token, config_profile) as api:
        body = api.get("/tokens")
    tokens = body.get("items", []) if isinstance(body, dict) else body
    if json_out:
        emit_json(tokens)
        return
    columns = ["id", "name", "role", "created", "revoked"]
    emit_table(
        f"tokens ({len(tokens)})",
        columns,
        [
            (
                t.get("id"),
                t.get("name"),
                t.get("role"),
                t.get("created_at", ""),
                t.get("revoked_at") or ("yes" if t.get("revoked") else ""),
            )
            for t in tokens
        ],
    )


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="Token id.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    with connect(server, token, config_profile) as api:
        api.delete(f"/tokens/{token_id}")
    if json_out:
        emit_json({"revoked": token_id})
        return
    console.print(f"token {token_id} revoked")
