"""Registry sync: the hub's device twins become storage `Device` records.

`sync_registry(hub, storage, now)` pages through every twin (the hub's query API, never one call
per device) and upserts devices in batches, one unit of work per batch, so a large fleet never
holds a long transaction. It reads:
- hardware id and profile from the twin tags `hardwareId`/`hardware_id` and `profile` (set by
  the hub's owner), falling back to the reported `tinyfleet.agent` (the agent's own report) only
  where the operator set none; the agent version from the report;
- tags: the twin's string-valued tags (group membership comes from them alone);
- `reported`: the raw reported agent document (cores, installed release);
- last seen: the twin's last activity time.

Invariants: device-written values are untrusted, so a malformed field reads as absent, and a
reported value never replaces an operator's tag (groups select on tags; a report only narrows,
see `DeviceFilter`); the
created time of a known device is kept (storage's upsert keeps it); returns how many twins were
written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from service.hubgateway import DeviceTwin, HubGateway
from service.storage import Device, Storage

__all__ = ["BATCH", "device_from_twin", "sync_registry"]

BATCH = 1000
UNKNOWN_HARDWARE = "unknown"
_MAX_TEXT = 200


def _text(value: object) -> str:
    return value[:_MAX_TEXT] if isinstance(value, str) else ""


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): v for k, v in tags.items() if isinstance(v, str)}


def device_from_twin(twin: DeviceTwin, now: datetime) -> Device:
    agent = twin.agent or {}
    tags = _tags(twin.tags)
    hardware = (
        tags.get("hardwareId")
        or tags.get("hardware_id")
        or _text(agent.get("hardwareId"))
        or UNKNOWN_HARDWARE
    )
    return Device(
        id=twin.device_id,
        hardware_id=hardware[:_MAX_TEXT],
        created_at=now,
        profile=(tags.get("profile") or _text(agent.get("profile")))[:_MAX_TEXT],
        agent_version=_text(agent.get("agentVersion")),
        tags=tags,
        reported=dict(agent),
        last_seen=_time(twin.last_activity),
    )


def _batches(items: Iterable[Device], size: int) -> Iterator[list[Device]]:
    batch: list[Device] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def sync_registry(hub: HubGateway, storage: Storage, now: datetime, *, batch: int = BATCH) -> int:
    """Upsert every twin of the hub as a device; returns how many were written.

    Raises HubGatewayError (the hub failed: the batches before it are kept) or StorageError.
    """
    total = 0
    devices = (device_from_twin(twin, now) for twin in hub.iter_twins())
    for chunk in _batches(devices, batch):
        with storage.begin() as uow:
            total += uow.devices.upsert(chunk)
    return total
