"""Registering devices from the command line, with or without the hub running.

The record goes straight into the hub's SQLite file; a running hub picks it up on the device's
first CONNECT or REST call (its cache falls back to the file for unknown ids).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from infra.hub._certs import issue_device_certificate
from infra.hub._config import HubConfig
from infra.hub._errors import RequestRefused
from infra.hub._files import private_dir
from infra.hub._store import DeviceRecord, HubStore, check_device_id
from infra.hub._twin import JsonObject, Twin

__all__ = [
    "ProvisionedDevice",
    "device_connection_string",
    "provision_device",
    "provision_devices",
]


@dataclass(frozen=True, slots=True)
class ProvisionedDevice:
    device_id: str
    connection_string: str
    auth_type: str
    primary_key: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    thumbprint: str | None = None


def device_connection_string(
    hostname: str, device_id: str, key: str | None = None, gateway: str = "localhost"
) -> str:
    """Azure's format; X.509 devices have `x509=true` instead of a key."""
    secret = f"SharedAccessKey={key}" if key is not None else "x509=true"
    return f"HostName={hostname};DeviceId={device_id};{secret};GatewayHostName={gateway}"


def provision_device(config: HubConfig, device_id: str, *, x509: bool = False) -> ProvisionedDevice:
    check_device_id(device_id)
    private_dir(config.data_dir)
    store = HubStore(config.db_path)
    try:
        if device_id in store.devices:
            raise RequestRefused(409, "DeviceAlreadyExists", f"device {device_id!r} already exists")
        generation = str(int(time.time() * 1_000_000))
        if x509:
            paths, thumb = issue_device_certificate(config.certs_dir, device_id)
            record = DeviceRecord(
                device_id, generation, auth_type="selfSigned", primary_thumbprint=thumb
            )
            store.put_device(record, Twin.new(device_id))
            return ProvisionedDevice(
                device_id,
                device_connection_string(config.hostname, device_id),
                "selfSigned",
                cert_path=str(paths.cert),
                key_path=str(paths.key),
                thumbprint=thumb,
            )
        return _provision_sas(store, config, [(device_id, {})])[0]
    finally:
        store.close()


def provision_devices(
    config: HubConfig, devices: Sequence[tuple[str, JsonObject]]
) -> list[ProvisionedDevice]:
    """Register many SAS devices, each with its twin tags, in one open of the hub's file and
    one transaction (a fleet of thousands; `provision_device` reopens the file per device).
    A running hub loads them on `HubStore.refresh_devices` or on each device's first use.

    Raises:
        RequestRefused: 409 DeviceAlreadyExists (nothing is written) or 400 for a bad id.
    """
    for device_id, _ in devices:
        check_device_id(device_id)
    if len({device_id for device_id, _ in devices}) != len(devices):
        raise RequestRefused(400, "ArgumentInvalid", "a device id is given twice")
    private_dir(config.data_dir)
    store = HubStore(config.db_path)
    try:
        taken = sorted(device_id for device_id, _ in devices if device_id in store.devices)
        if taken:
            raise RequestRefused(409, "DeviceAlreadyExists", f"devices already exist: {taken[:5]}")
        return _provision_sas(store, config, devices)
    finally:
        store.close()


def _provision_sas(
    store: HubStore, config: HubConfig, devices: Sequence[tuple[str, JsonObject]]
) -> list[ProvisionedDevice]:
    generation = str(int(time.time() * 1_000_000))
    made, rows = [], []
    for device_id, tags in devices:
        keys = [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2)]
        record = DeviceRecord(device_id, generation, primary_key=keys[0], secondary_key=keys[1])
        rows.append((record, replace(Twin.new(device_id), tags=dict(tags))))
        made.append(
            ProvisionedDevice(
                device_id,
                device_connection_string(config.hostname, device_id, keys[0]),
                "sas",
                primary_key=keys[0],
            )
        )
    store.put_devices(rows)
    return made
