"""What the hub gateway exchanges: registered devices, twins as the service reads them, the
`tinyfleet` desired `service` property (docs/protocol/device-cloud.md), direct-method results.

`ServiceSpec` is checked against the device's own parser (`parse_desired`) when built, so the
service can never write a desired document that the agent would refuse as malformed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from device_agent.protocol import COMPONENT, TwinError, WorkflowAction, parse_desired
from service.hubgateway._errors import HubRequestError
from signing.device_ids import is_device_id

__all__ = [
    "DeviceTwin",
    "MethodResult",
    "RegisteredDevice",
    "ServiceSpec",
    "check_device_id",
    "check_tags",
]

# Tag names become query paths (`tags.<name>`), so they are plain identifiers.
_TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_TAG_VALUE = 256


def check_device_id(device_id: str) -> str:
    # IoT Hub's device id alphabet and length: one definition with the director's.
    if not is_device_id(device_id):
        raise HubRequestError(f"{device_id!r} is not an IoT Hub device id")
    return device_id


def check_tags(tags: Mapping[str, str | None]) -> dict[str, str | None]:
    """Flat string tags (`ADUGroup`-style); None removes a tag."""
    checked: dict[str, str | None] = {}
    for name, value in tags.items():
        if not isinstance(name, str) or not _TAG_NAME.fullmatch(name):
            raise HubRequestError(f"tag name {name!r} must be an identifier of up to 64 chars")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TAG_VALUE):
            raise HubRequestError(f"tag {name!r} must be a string of up to {MAX_TAG_VALUE} chars")
        checked[name] = value
    return checked


@dataclass(frozen=True)
class RegisteredDevice:
    device_id: str
    status: str  # enabled | disabled
    primary_key: str | None  # SAS devices: the key the device authenticates with


@dataclass(frozen=True)
class DeviceTwin:
    """A twin as the rollout engine reads it; `agent` is the raw reported `tinyfleet.agent`."""

    device_id: str
    etag: str
    status: str
    connected: bool
    last_activity: str | None
    tags: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 0
    reported_version: int = 0
    desired_service: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None
    service_ack: dict[str, Any] | None = None  # the agent's {"value", "ac", "ad", "av"}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DeviceTwin:
        """Build from the twin JSON shape the hub's REST API returns (either adapter)."""
        properties = doc.get("properties") or {}
        desired = properties.get("desired") or {}
        reported = properties.get("reported") or {}
        desired_component = desired.get(COMPONENT)
        reported_component = reported.get(COMPONENT)
        return cls(
            device_id=str(doc["deviceId"]),
            etag=str(doc.get("etag") or ""),
            status=str(doc.get("status") or "enabled"),
            connected=str(doc.get("connectionState") or "").lower() == "connected",
            last_activity=_text(doc.get("lastActivityTime")),
            tags=dict(doc.get("tags") or {}),
            desired_version=int(desired.get("$version") or 0),
            reported_version=int(reported.get("$version") or 0),
            desired_service=_part(desired_component, "service"),
            agent=_part(reported_component, "agent"),
            service_ack=_part(reported_component, "service"),
        )


def _text(value: object) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _part(component: object, name: str) -> dict[str, Any] | None:
    if isinstance(component, dict) and isinstance(component.get(name), dict):
        return dict(component[name])
    return None


@dataclass(frozen=True)
class ServiceSpec:
    """The desired `tinyfleet.service` property: a workflow and where the repositories are."""

    action: WorkflowAction
    workflow_id: str
    image_url: str | None = None
    director_url: str | None = None
    targets_url: str | None = None
    query: str = ""
    telemetry_interval_s: int = 60
    retry_timestamp: str | None = None

    def __post_init__(self) -> None:
        try:
            parse_desired({"$version": 1, COMPONENT: self.component()})
        except TwinError as exc:
            raise HubRequestError(f"desired service property refused: {exc}") from exc

    def component(self) -> dict[str, Any]:
        # Every key is written, nulls included: a twin patch merges, and a null removes a key
        # left over from an earlier workflow (e.g. an old retryTimestamp).
        return {
            "__t": "c",
            "service": {
                "workflow": {
                    "action": int(self.action),
                    "id": self.workflow_id,
                    "retryTimestamp": self.retry_timestamp,
                },
                "repository": {
                    "imageUrl": self.image_url,
                    "directorUrl": self.director_url,
                    "targetsUrl": self.targets_url,
                    "query": self.query,
                },
                "telemetry": {"intervalSeconds": self.telemetry_interval_s},
            },
        }


@dataclass(frozen=True)
class MethodResult:
    status: int
    payload: Any
