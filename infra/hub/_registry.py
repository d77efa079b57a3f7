"""The identity registry operations and the JSON shapes of the service REST surface.

The shapes are those `azure-iot-hub` 2.7 (msrest) deserialises (reference §2.3): every
ISO-8601 field is parseable, `version` is an integer, ETags are quoted by the caller.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from infra.hub._errors import RequestRefused
from infra.hub._hub import HubCore
from infra.hub._query import compile_query
from infra.hub._store import DeviceRecord, check_device_id
from infra.hub._twin import Twin, check_etag

__all__ = ["delete_device", "device_json", "put_device", "query_twins", "twin_json"]

_NEVER = "0001-01-01T00:00:00Z"
_AUTH_TYPES = ("sas", "selfSigned", "certificateAuthority", "none")


def _iso(timestamp: float) -> str:
    if not timestamp:
        return _NEVER
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _device_etag(record: DeviceRecord) -> str:
    return base64.b64encode(str(record.etag_counter).encode()).decode()


def _valid_key(key: Any) -> str | None:
    if key in (None, ""):
        return None
    if not isinstance(key, str):
        raise RequestRefused(400, "ArgumentInvalid", "symmetric keys must be base64 strings")
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError as exc:
        raise RequestRefused(400, "ArgumentInvalid", "symmetric key is not base64") from exc
    if not 16 <= len(raw) <= 64:
        raise RequestRefused(400, "ArgumentInvalid", "symmetric keys must be 16 to 64 bytes")
    return key


def put_device(core: HubCore, device_id: str, body: Any, if_match: str | None) -> DeviceRecord:
    """PUT /devices/{id}: create (no If-Match) or update (If-Match, `*` matching anything)."""
    check_device_id(device_id)
    if not isinstance(body, dict):
        raise RequestRefused(400, "ArgumentInvalid", "the device must be a JSON object")
    if body.get("deviceId", device_id) != device_id:
        raise RequestRefused(400, "ArgumentInvalid", "deviceId in the body differs from the URL")
    existing = core.store.lookup_device(device_id)
    if existing is None and if_match not in (None, '"*"', "*"):
        raise RequestRefused(404, "DeviceNotFound", f"device {device_id!r} is not registered")
    if existing is not None and if_match is None:
        raise RequestRefused(409, "DeviceAlreadyExists", f"device {device_id!r} already exists")
    if existing is not None:
        check_etag(if_match, _device_etag(existing))
    auth = body.get("authentication") or {}
    auth_type = auth.get("type") or "sas"
    if auth_type not in _AUTH_TYPES:
        raise RequestRefused(400, "ArgumentInvalid", f"authentication type {auth_type!r}")
    keys = auth.get("symmetricKey") or {}
    prints = auth.get("x509Thumbprint") or {}
    status = body.get("status") or "enabled"
    if status not in ("enabled", "disabled"):
        raise RequestRefused(400, "ArgumentInvalid", f"status {status!r}")
    primary, secondary = _valid_key(keys.get("primaryKey")), _valid_key(keys.get("secondaryKey"))
    if auth_type == "sas":
        primary, secondary = primary or _new_key(), secondary or _new_key()
    thumbs = (prints.get("primaryThumbprint"), prints.get("secondaryThumbprint"))
    if auth_type == "selfSigned" and not any(thumbs):
        raise RequestRefused(400, "ArgumentInvalid", "selfSigned devices need a thumbprint")
    now = core.clock()
    base = existing or DeviceRecord(device_id, str(int(now * 1_000_000)))
    record = replace(
        base,
        etag_counter=base.etag_counter + (1 if existing else 0),
        status=status,
        status_reason=body.get("statusReason"),
        auth_type=auth_type,
        primary_key=primary,
        secondary_key=secondary,
        primary_thumbprint=thumbs[0],
        secondary_thumbprint=thumbs[1],
        iot_edge=bool((body.get("capabilities") or {}).get("iotEdge", False)),
        status_updated=_iso(now)
        if existing is None or existing.status != status
        else base.status_updated,
    )
    core.store.put_device(record, None if existing else Twin.new(device_id))
    if status != "enabled" or (existing is not None and existing.auth_type != auth_type):
        core.disconnect_device(device_id, "device identity changed")
    return record


def delete_device(core: HubCore, device_id: str, if_match: str | None) -> None:
    record = core.store.lookup_device(device_id)
    if record is None:
        raise RequestRefused(404, "DeviceNotFound", f"device {device_id!r} is not registered")
    check_etag(if_match, _device_etag(record))
    core.disconnect_device(device_id, "device deleted")
    core.store.delete_device(device_id)


def _presence(core: HubCore, device_id: str) -> tuple[str, str, str]:
    presence = core.presence.get(device_id)
    if presence is None:
        return "Disconnected", _NEVER, _NEVER
    state = "Connected" if presence.connected else "Disconnected"
    return state, _iso(presence.changed), _iso(presence.last_activity)


def device_json(core: HubCore, record: DeviceRecord) -> dict[str, Any]:
    state, changed, activity = _presence(core, record.device_id)
    return {
        "deviceId": record.device_id,
        "generationId": record.generation_id,
        "etag": _device_etag(record),
        "connectionState": state,
        "status": record.status,
        "statusReason": record.status_reason,
        "connectionStateUpdatedTime": changed,
        "statusUpdatedTime": record.status_updated,
        "lastActivityTime": activity,
        "cloudToDeviceMessageCount": core.store.count_c2d(record.device_id),
        "authentication": {
            "symmetricKey": {
                "primaryKey": record.primary_key,
                "secondaryKey": record.secondary_key,
            },
            "x509Thumbprint": {
                "primaryThumbprint": record.primary_thumbprint,
                "secondaryThumbprint": record.secondary_thumbprint,
            },
            "type": record.auth_type,
        },
        "capabilities": {"iotEdge": record.iot_edge},
        "deviceScope": None,
        "parentScopes": [],
    }


def twin_json(core: HubCore, twin: Twin) -> dict[str, Any]:
    record = core.store.devices[twin.device_id]
    state, _, activity = _presence(core, twin.device_id)
    return {
        "deviceId": twin.device_id,
        "moduleId": None,
        "etag": twin.etag,
        "deviceEtag": _device_etag(record),
        "version": twin.version,
        "status": record.status,
        "statusReason": record.status_reason,
        "statusUpdateTime": record.status_updated,
        "connectionState": state,
        "lastActivityTime": activity,
        "cloudToDeviceMessageCount": core.store.count_c2d(twin.device_id),
        "authenticationType": record.auth_type,
        "x509Thumbprint": {
            "primaryThumbprint": record.primary_thumbprint,
            "secondaryThumbprint": record.secondary_thumbprint,
        },
        "capabilities": {"iotEdge": record.iot_edge},
        "tags": twin.tags,
        "properties": {
            "desired": {**twin.desired, "$version": twin.desired_version},
            "reported": {**twin.reported, "$version": twin.reported_version},
        },
    }


def query_twins(
    core: HubCore, text: str, max_items: int | None, continuation: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Run a query; returns one page of twins and the continuation token of the next page."""
    predicate = compile_query(text)
    core.store.refresh_devices()
    limit = min(max_items or core.config.limits.query_max_items, core.config.limits.query_max_items)
    try:
        start = int(continuation) if continuation else 0
    except ValueError as exc:
        raise RequestRefused(400, "BadRequest", "invalid continuation token") from exc
    matches = [
        doc
        for device_id in sorted(core.store.twins)
        if predicate(doc := twin_json(core, core.store.twins[device_id]))
    ]
    page = matches[start : start + limit]
    more = start + limit < len(matches)
    return page, str(start + limit) if more else None
