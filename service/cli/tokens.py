"""`tinyfleet tokens`: API tokens and their roles (admin only)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from service.cli._output import console, emit_json, emit_table, fail
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
    secret_file: Annotated[
        Path | None,
        typer.Option("--secret-file", help="Write the secret to this new file (mode 0600)."),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    config_profile: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a token; its secret is shown once (on a terminal, in --json, or in --secret-file)."""
    if secret_file is None and not json_out and not sys.stdout.isatty():
        fail(
            "the secret is shown only on a terminal; stdout is not one",
            code=2,
            hint="use --secret-file PATH (a new 0600 file) or --json",
        )
    if secret_file is not None and secret_file.exists():
        fail(f"{secret_file} exists; the secret goes only into a new file", code=2)
    with connect(server, token, config_profile) as api:
        created = api.post("/tokens", {"name": name, "role": role.value})
    if secret_file is not None:
        _write_new_private(secret_file, str(created.get("secret")), str(created.get("id")))
        created = {k: v for k, v in created.items() if k != "secret"}
        created["secret_file"] = str(secret_file)
    if json_out:
        emit_json(created)
        return
    if secret_file is not None:
        console.print(f"token {created.get('id')} ({created.get('name')}, {created.get('role')})")
        console.print(f"secret written to {secret_file} (mode 0600)", markup=False)
        return
    console.print(f"token {created.get('id')} ({created.get('name')}, {created.get('role')})")
    console.print("secret (shown once, store it now):", style="bold")
    console.print(str(created.get("secret")), markup=False, highlight=False, soft_wrap=True)


def _write_new_private(path: Path, secret: str, token_id: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(
            f"cannot create {path}: {exc}",
            hint=f"token {token_id} was created without a usable secret: revoke it",
        )
    try:
        os.write(fd, secret.encode() + b"\n")
    finally:
        os.close(fd)


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
