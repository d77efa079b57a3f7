"""`tinyfleet hub ...`: run the mock Azure IoT Hub and register its devices."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from infra.hub import HubConfig, HubError, HubServer, RequestRefused, provision_device
from service.cli._output import JsonOption, console, emit_json, emit_table, fail

app = typer.Typer(help="Run the mock Azure IoT Hub and manage its devices.", no_args_is_help=True)
device_app = typer.Typer(help="Register devices with the mock hub.", no_args_is_help=True)
app.add_typer(device_app, name="device")

DataOption = Annotated[
    Path, typer.Option("--data", help="The hub's data directory (SQLite files, certificates).")
]
HostnameOption = Annotated[
    str,
    typer.Option("--hostname", help="The hub host name; must contain a dot (Azure C SDK rule)."),
]


def _config(data: Path, hostname: str, mqtt_port: int = 8883, https_port: int = 8443) -> HubConfig:
    try:
        return HubConfig(
            data_dir=data, hostname=hostname, mqtt_port=mqtt_port, https_port=https_port
        )
    except HubError as exc:
        fail(str(exc), hint="e.g. --hostname tinyfleet-hub.local")


def _running_hostname(data: Path) -> str:
    try:
        info = json.loads((data / "hub.json").read_text())
        return str(info["hostname"])
    except (OSError, ValueError, KeyError):
        return "tinyfleet-hub.local"


@app.command("run")
def run(
    data: DataOption,
    mqtt_port: Annotated[int, typer.Option(help="MQTT over TLS port (0: any free port).")] = 8883,
    https_port: Annotated[int, typer.Option(help="Service REST port (0: any free port).")] = 8443,
    hostname: HostnameOption = "tinyfleet-hub.local",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log connections.")] = False,
) -> None:
    """Run the hub until interrupted; writes DATA/hub.json with ports and connection strings."""
    config = _config(data, hostname, mqtt_port, https_port)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = HubServer(config)
        await server.start()
        console.print(
            f"mock IoT hub [bold]{config.hostname}[/]: MQTT/TLS {server.mqtt_port}, "
            f"HTTPS {server.https_port}; details in {config.data_dir / 'hub.json'}"
        )
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except HubError as exc:
        fail(str(exc))


@device_app.command("add")
def add_device(
    device_id: Annotated[str, typer.Argument(help="The device id to register.")],
    data: DataOption,
    x509: Annotated[
        bool, typer.Option("--x509", help="Issue a client certificate instead of a SAS key.")
    ] = False,
    hostname: Annotated[
        str | None,
        typer.Option(help="The hub host name (default: the one in DATA/hub.json, if present)."),
    ] = None,
    json_output: bool = JsonOption,
) -> None:
    """Register a device; print its connection string (Azure format, GatewayHostName=localhost)."""
    config = _config(data, hostname or _running_hostname(data))
    try:
        device = provision_device(config, device_id, x509=x509)
    except RequestRefused as exc:
        duplicate = exc.code == "DeviceAlreadyExists"
        fail(exc.message, hint="device ids are unique; pick another" if duplicate else None)
    except HubError as exc:
        fail(str(exc))
    record = {
        "device_id": device.device_id,
        "auth_type": device.auth_type,
        "connection_string": device.connection_string,
        "cert_path": device.cert_path,
        "key_path": device.key_path,
        "thumbprint": device.thumbprint,
    }
    if json_output:
        emit_json(record)
        return
    rows = [(k, v) for k, v in record.items() if v is not None and k != "connection_string"]
    emit_table(f"device {device.device_id}", ["field", "value"], rows)
    typer.echo(device.connection_string)
