"""`tinyfleet keys`: create, list and rotate the signing keys of both repositories."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from service.cli import _context
from service.cli._output import JsonOption, console, emit_json, emit_table, fail
from service.config import Mode
from signing.keys import KeyScheme

app = typer.Typer(
    help="Signing keys: Ed25519 by default, ECDSA P-256 where a KMS needs it.", no_args_is_help=True
)


@app.command("init")
def init(
    data: Path | None = _context.DataOption,
    mode: Mode = typer.Option(
        Mode.DEV,
        help="dev: 1-of-1 root, dev passphrase allowed; "
        "production: threshold root keys and a real passphrase",
    ),
    scheme: KeyScheme = typer.Option(KeyScheme.ED25519, help="Key type for every role."),
    online_scheme: KeyScheme | None = typer.Option(
        None,
        help="Key type for the online roles (snapshot, timestamp), e.g. ecdsa-p256 for Key Vault.",
    ),
    json_out: bool = JsonOption,
) -> None:
    """Create a keystore with every key the image repository and the director need."""
    service = _context.trust(data, mode)
    with _context.errors():
        created = service.init_keys(scheme, online_scheme)
    if json_out:
        emit_json([e.to_dict() | {"keyid": e.keyid} for e in created])
        return
    console.print(f"created {len(created)} keys in {service.settings.keys_dir} ({mode.value} mode)")


@app.command("list")
def list_keys(data: Path | None = _context.DataOption, json_out: bool = JsonOption) -> None:
    """List the keys in use: repository, role, type and key id."""
    service = _context.trust(data)
    with _context.errors():
        entries = service.keystore.entries()
    if json_out:
        emit_json([e.to_dict() | {"keyid": e.keyid} for e in entries])
        return
    emit_table(
        "signing keys",
        ["name", "repo", "role", "scheme", "keyid", "private key"],
        [(e.name, e.repo, e.role, e.scheme, e.keyid[:16], e.uri.split(":", 1)[0]) for e in entries],
    )


@app.command("rotate")
def rotate(
    role: str = typer.Argument(
        ..., help="root, targets, snapshot, timestamp, firmware, models, releases"
    ),
    repo: str = typer.Option("image", help="image or director"),
    data: Path | None = _context.DataOption,
    scheme: KeyScheme = typer.Option(KeyScheme.ED25519, help="Type of the new key."),
    uri: str | None = typer.Option(
        None, help="Rotate to an external key, e.g. azurekms://VAULT/keys/NAME/VERSION"
    ),
    public_key: Path | None = typer.Option(
        None, help="PEM public key of the external key (with --uri)."
    ),
    json_out: bool = JsonOption,
) -> None:
    """Replace a role's keys, publish the new root (signed by old and new root keys) and re-sign."""
    if (uri is None) != (public_key is None):
        fail("--uri and --public-key go together", code=2)
    service = _context.trust(data)
    with _context.errors():
        external = (uri, public_key.read_bytes()) if uri and public_key else None
        new = service.rotate(repo, role, datetime.now(UTC), scheme, external)
    if json_out:
        emit_json([e.to_dict() | {"keyid": e.keyid} for e in new])
        return
    for entry in new:
        console.print(f"{repo} {role}: now signed by {entry.name} ({entry.keyid[:16]}…)")
