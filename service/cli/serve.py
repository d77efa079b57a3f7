"""`tinyfleet serve`: run the service (API, rollout engine, registry sync, telemetry ingestion)
until Ctrl-C or SIGTERM. A composition root: it may build infra adapters (the mock hub's
telemetry feed) and hands them to `service.runtime.ServiceRuntime`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from service.cli import _context
from service.cli._output import fail

HOST_HELP = "Address the API listens on [env TINYFLEET_API_HOST; default 127.0.0.1]"
KEY_IN_ARGV = (
    "warning: --hub carries a SharedAccessKey, which every user of this machine can read in "
    "`ps`; use --hub-file PATH or TINYFLEET_HUB_CONNECTION_STRING instead"
)


def hub_connection_string(hub: str | None, hub_file: Path | None) -> str | None:
    """The connection string from `--hub` or `--hub-file` (None: the environment's, if any).
    A key given in argv is warned about: other users see it in `ps`."""
    if hub is not None and hub_file is not None:
        fail("give --hub or --hub-file, not both", code=2)
    if hub_file is not None:
        try:
            text = hub_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read --hub-file {hub_file}: {exc}", code=2)
        if not text:
            fail(f"--hub-file {hub_file} is empty", code=2)
        if hub_file.stat().st_mode & 0o077:
            typer.echo(
                f"warning: --hub-file {hub_file} is readable by other users; chmod 600 it",
                err=True,
            )
        return text
    if hub is not None and "sharedaccesskey=" in hub.lower():
        typer.echo(KEY_IN_ARGV, err=True)
    return hub


def show_admin_token(secret: str, created: bool, path: Path, *, dev_mode: bool) -> None:
    """The bootstrap secret is shown once, on a terminal, in dev mode only: captured output
    (service logs, CI, containers) gets only the path of its 0600 file."""
    if created and dev_mode and sys.stdout.isatty():
        typer.echo(f"admin token     {secret}  (shown once)")
    typer.echo(f"admin token in  {path}")


def _telemetry_source(spec: str) -> Any | None:
    """The feed the ingestion workers read: `mockhub:PATH` is the mock hub's feed file; the
    runtime builds `eventhub` itself from the settings."""
    if spec.startswith("mockhub:"):
        from infra.telemetry_source import feed_source

        return feed_source(Path(spec.removeprefix("mockhub:")))
    return None


def serve(
    db: str | None = typer.Option(None, "--db", help="Database URL (default: SQLite in DATA)"),
    blob: str | None = typer.Option(
        None, "--blob", help="Blob store: file://DIR (default DATA/blobs) or azure://CONTAINER"
    ),
    hub: str | None = typer.Option(
        None,
        "--hub",
        help="IoT hub service connection string (Azure or the mock hub); visible in `ps`: "
        "prefer --hub-file or TINYFLEET_HUB_CONNECTION_STRING",
    ),
    hub_file: Path | None = typer.Option(
        None, "--hub-file", help="File holding the IoT hub service connection string"
    ),
    data: Path | None = _context.DataOption,
    host: str | None = typer.Option(None, "--host", help=HOST_HELP),
    port: int | None = typer.Option(None, "--port", help="API port; 0 picks a free one"),
    blob_port: int | None = typer.Option(
        None,
        "--blob-port",
        help="Blob server port [env TINYFLEET_BLOB_PORT; default: chosen on the first start "
        "and kept in DATA/blob-port]",
    ),
    telemetry: str | None = typer.Option(
        None, "--telemetry", help="Telemetry source: mockhub:PATH or eventhub"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level"),
) -> None:
    """Run the tinyfleet service until Ctrl-C or SIGTERM."""
    from pydantic import ValidationError

    from service.config import Settings
    from service.runtime import ServiceRuntime

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides: dict[str, object] = {}
    for key, value in (
        ("data_dir", data),
        ("db_url", db),
        ("blob_url", blob),
        ("hub_connection_string", hub_connection_string(hub, hub_file)),
        ("api_host", host),
        ("api_port", port),
        ("blob_port", blob_port),
        ("telemetry_source", telemetry),
    ):
        if value is not None:
            overrides[key] = value
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        fail(f"invalid configuration: {exc.errors()[0]['msg']}", code=2)
    runtime = ServiceRuntime(
        settings, telemetry_source=_telemetry_source(settings.telemetry_source)
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        addresses = runtime.start()
    except Exception as exc:
        fail(f"the service could not start: {type(exc).__name__}: {exc}")
    # Plain lines (no wrapping, no markup): scripts read the addresses from them.
    typer.echo(f"tinyfleet API   {addresses.api_url}/api/v1  (docs: /api/v1/docs)")
    typer.echo(f"dashboard       {addresses.api_url}/dashboard/")
    if addresses.blob_url:
        typer.echo(f"blobs           {addresses.blob_url}")
    show_admin_token(
        addresses.admin_token,
        addresses.admin_token_created,
        addresses.admin_token_file,
        dev_mode=settings.dev_mode,
    )
    typer.echo("ready; Ctrl-C stops")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        typer.echo("stopping...")
        runtime.stop()
