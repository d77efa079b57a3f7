"""`tinyfleet agent run`: one device (the agent and its two simulated M4 cores) against a hub."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from device_agent.hub_client import HubOptions
from device_agent.hub_dialect import ConnectionString, DialectError
from firmware.icc import PROFILES
from infra.simdevice import CoreSpec, SimulatedDevice, default_firmware
from service.cli._output import console, fail

app = typer.Typer(
    help="The device agent for the A7 core, with simulated M4 cores.", no_args_is_help=True
)


@app.command("run")
def run(
    connection_string: str = typer.Option(
        ..., envvar="TINYFLEET_CONNECTION_STRING", help="The device's IoT Hub connection string."
    ),
    ca: Path = typer.Option(..., exists=True, dir_okay=False, help="CA certificate of the hub."),
    state: Path = typer.Option(..., help="The device's state directory (persists across runs)."),
    image_root: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="Pinned image-repository root (1.root.json)."
    ),
    director_root: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="Pinned director root (1.root.json)."
    ),
    profile: str = typer.Option("mt3620", help=f"Device profile: {', '.join(sorted(PROFILES))}."),
    hardware: str = typer.Option("mt3620", help="Hardware id the device reports and verifies."),
    port: int = typer.Option(8883, help="MQTT over TLS port of the hub."),
    cert: Path | None = typer.Option(None, help="X.509 device certificate (with --key)."),
    key: Path | None = typer.Option(None, help="X.509 device private key."),
    firmware: Path | None = typer.Option(None, help="Core firmware image to boot [m4-1.0.0]."),
    inference_period: float = typer.Option(0.5, min=0.01, help="Seconds between inferences."),
) -> None:
    """Run one device until interrupted: updates, reporting and telemetry over the hub."""
    if profile not in PROFILES:
        fail(f"unknown profile {profile!r}", code=2, hint=f"choose from {', '.join(PROFILES)}")
    if (cert is None) != (key is None):
        fail("--cert and --key go together", code=2)
    try:
        connection = ConnectionString.parse(connection_string)
    except DialectError as exc:
        fail(f"bad connection string: {exc}", code=2)
    device = SimulatedDevice(
        device_id=connection.device_id,
        hardware_id=hardware,
        profile=profile,
        state_dir=state,
        image_root=image_root.read_bytes(),
        director_root=director_root.read_bytes(),
        connection=connection,
        hub_options=HubOptions(ca_file=ca, port=port, cert_file=cert, key_file=key),
        cores={
            core: CoreSpec(
                firmware=firmware or default_firmware(), inference_period_s=inference_period, seed=i
            )
            for i, core in enumerate(PROFILES[profile].core_ids)
        },
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    device.start()
    console.print(f"{connection.device_id}: running ({profile}); Ctrl-C stops")
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
