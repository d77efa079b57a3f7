"""Entry point of the `tinyfleet` command.

Each command group lives in its own module of this package and is registered below; the modules
build their configuration and adapters when a command runs, never at import time.
"""

from __future__ import annotations

import typer

from service.cli import (
    agent,
    audit,
    db,
    demo,
    devices,
    fleet,
    groups,
    hub,
    keys,
    models,
    outbox,
    release,
    repo,
    rollout,
    telemetry,
    tokens,
)
from service.cli import serve as serve_command
from service.cli import up as up_command

app = typer.Typer(
    name="tinyfleet",
    help="Secure OTA updates and inference telemetry for fleets of TinyML microcontrollers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(agent.app, name="agent")
app.add_typer(repo.app, name="repo")
app.add_typer(release.app, name="release")
app.add_typer(hub.app, name="hub")
app.add_typer(models.app, name="models")
app.add_typer(db.app, name="db")
app.add_typer(devices.app, name="devices")
app.add_typer(groups.app, name="groups")
app.add_typer(rollout.app, name="rollout")
app.add_typer(audit.app, name="audit")
app.add_typer(outbox.app, name="outbox")
app.add_typer(tokens.app, name="tokens")
app.add_typer(telemetry.app, name="telemetry")
app.add_typer(fleet.app, name="fleet")
app.command(name="demo")(demo.demo)
app.command(name="up")(up_command.up)
app.command(name="serve")(serve_command.serve)


def main() -> None:
    app()
