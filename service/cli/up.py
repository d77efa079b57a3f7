"""`tinyfleet up`: the whole system on this machine, until Ctrl-C.

Mock IoT hub, blob store, the service (API, dashboard, rollout engine, ingestion) and N simulated
devices, each an agent with two M4 core processes. Everything is kept in `--data`; running `up`
again on the same folder brings back the same devices, releases and rollouts.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from infra.fleet import FleetError, FleetOptions, parse_groups
from infra.stack import Stack, StackError, StackOptions
from service.cli._output import console, emit_table, fail


def groups_for(devices: int | None, groups: str | None) -> dict[str, int] | None:
    """The group counts: `--groups` as given, else `--devices` split 10 % canary, or None."""
    if groups:
        parsed = parse_groups(groups)
        if devices is not None and devices != sum(parsed.values()):
            raise FleetError(f"--devices {devices} does not match --groups ({groups})")
        return parsed
    if devices is None:
        return None
    if devices < 1:
        raise FleetError("--devices must be at least 1")
    canary = max(1, devices // 10)
    return {"canary": canary, "main": devices - canary} if devices > 1 else {"canary": 1}


def up(
    devices: int | None = typer.Option(None, "--devices", help="Devices to run (first run)."),
    groups: str | None = typer.Option(
        None, "--groups", help="Group sizes, e.g. canary:2,main:18 (default 10 % canary)."
    ),
    db: str = typer.Option("", "--db", help="Database URL (default: SQLite in the data dir)."),
    blob: str = typer.Option("filesystem", "--blob", help="Blob store: filesystem or azurite."),
    data: Path = typer.Option(Path(".tinyfleet-up"), "--data", help="Folder for all state."),
    api_port: int = typer.Option(8080, "--api-port", help="API and dashboard port (0: any)."),
    inference_period: float = typer.Option(
        0.5, "--inference-period", help="Seconds between inferences on each simulated core."
    ),
    cores: str = typer.Option(
        "process",
        "--cores",
        help="Simulated cores as OS processes (process) or in the fleet's process (inprocess).",
    ),
    fleet_processes: int = typer.Option(
        0,
        "--fleet-processes",
        help="Fleet host processes (0: this one); use 2+ for thousands of devices.",
    ),
) -> None:
    """Start hub, blob store, service and simulated fleet; stop cleanly on Ctrl-C."""
    try:
        options = StackOptions(
            data_dir=data,
            groups=groups_for(devices, groups),
            db_url=db,
            blob=blob,
            api_port=api_port,
            fleet=FleetOptions(
                inference_period_s=inference_period,
                core_mode=cores,
                agent_poll_s=0.5 if cores == "inprocess" else None,
            ),
            fleet_processes=fleet_processes,
        )
    except (FleetError, StackError) as exc:
        fail(str(exc), code=2)
    stack = Stack(options)
    stopping = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    console.print(f"starting the stack in {data} …")
    try:
        described = stack.start()
        show(described, stack.service_available)
        console.print("[bold]running[/] — Ctrl-C stops everything (state stays in the data dir)")
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    except (FleetError, StackError, OSError) as exc:
        fail(f"the stack did not start: {exc}")
    finally:
        console.print("stopping …")
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
        console.print("stopped")


_KEY = re.compile(r"(SharedAccessKey=)[^;]*", re.IGNORECASE)


def hide_key(connection_string: str, where: str) -> str:
    return _KEY.sub(lambda m: f"{m.group(1)}<hidden: in {where}>", connection_string)


def show(
    described: dict[str, Any], service_available: bool, *, secrets: bool | None = None
) -> None:
    """The stack's addresses. Secrets (the admin token in the dashboard link, SharedAccessKeys)
    are shown only on a terminal (`secrets` None: when stdout is one); captured output gets
    where they are kept instead."""
    if secrets is None:
        secrets = sys.stdout.isatty()
    rows: list[tuple[str, str]] = []
    service = described.get("service") or {}
    data = Path(str(described.get("data_dir", ".")))
    hub_json = str(data / "hub" / "hub.json")
    if service:
        api = str(service.get("api_url", ""))
        rows.append(("API", f"{api}/api/v1"))
        token = service.get("admin_token") if secrets else None
        rows.append(("dashboard", f"{api}/?token={token}" if token else f"{api}/"))
        if service.get("admin_token_file"):
            rows.append(("admin token file", str(service["admin_token_file"])))
        if service.get("blob_url"):
            rows.append(("service blob server", str(service["blob_url"])))
    elif not service_available:
        rows.append(
            ("service", "not available yet (service.runtime is missing): hub and fleet only")
        )
    rows += [
        ("hub MQTT (devices)", described["hub_mqtt"]),
        ("hub HTTPS (service)", described["hub_https"]),
        (
            "hub service connection string",
            described["hub_service_connection_string"]
            if secrets
            else hide_key(described["hub_service_connection_string"], hub_json),
        ),
        ("hub CA certificate", described["hub_ca_cert"]),
        ("hub telemetry feed", described["hub_feed"]),
        ("blob store", str(described["blob"])),
    ]
    if "devices" in described:
        groups = ", ".join(f"{g}: {n}" for g, n in described["devices"].items())
        rows.append(("devices", groups))
        example = described["device_connection_string_example"]
        identity = str(data / "fleet" / "DEVICE" / "identity.json")
        rows.append(
            (
                "device connection string (e.g.)",
                example if secrets else hide_key(example, identity),
            )
        )
    rows.append(("data", described["data_dir"]))
    emit_table("tinyfleet up", ["what", "where"], rows)
