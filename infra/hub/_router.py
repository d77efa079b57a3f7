"""The IoT Hub MQTT topic grammar: what an authenticated device may publish and subscribe to.

Pure: strings in, typed requests out; standard library only.

Invariants:
- `devices/...` topics are accepted only for the connection's own device id; `$iothub/...`
  topics carry no device id and therefore always mean the connection's own identity.
- Only the documented topics and filters are accepted; anything else raises `ProtocolViolation`
  (the real hub closes the connection).
- Property bags are percent-decoded without treating `+` as a space; `$.` and `%24.` keys are
  the same system properties.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import quote, unquote

from infra.hub._errors import ProtocolViolation

__all__ = [
    "D2CRequest",
    "MethodResponse",
    "Subscription",
    "TwinGet",
    "TwinPatchReported",
    "c2d_topic",
    "classify_publish",
    "classify_subscription",
    "desired_patch_topic",
    "encode_property_bag",
    "method_request_topic",
    "parse_property_bag",
    "twin_response_topic",
]

SYSTEM_PROPERTIES = {
    "$.mid": "message-id",
    "$.cid": "correlation-id",
    "$.uid": "user-id",
    "$.ct": "content-type",
    "$.ce": "content-encoding",
    "$.exp": "absolute-expiry-time",
    "$.on": "output-name",
    "$.ifid": "interface-id",
    "$.ctime": "creation-time",
    "$.sub": "component-name",
    "$.to": "to",
}


class Subscription(enum.Enum):
    C2D = "c2d"
    TWIN_RESPONSES = "twin-responses"
    DESIRED_PATCHES = "desired-patches"
    METHODS = "methods"


@dataclass(frozen=True, slots=True)
class D2CRequest:
    system_properties: dict[str, str]
    properties: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class TwinGet:
    rid: str


@dataclass(frozen=True, slots=True)
class TwinPatchReported:
    rid: str


@dataclass(frozen=True, slots=True)
class MethodResponse:
    rid: str
    status: int


Request = D2CRequest | TwinGet | TwinPatchReported | MethodResponse


def parse_property_bag(bag: str) -> tuple[dict[str, str], dict[str, str | None]]:
    """Split a bag into (system properties by their Event Hubs name, application properties)."""
    system: dict[str, str] = {}
    application: dict[str, str | None] = {}
    if not bag:
        return system, application
    for item in bag.split("&"):
        if not item:
            continue
        raw_key, sep, raw_value = item.partition("=")
        key = unquote(raw_key, errors="strict")
        value = unquote(raw_value, errors="strict") if sep else None
        if not key:
            raise ProtocolViolation("property bag has an empty key")
        if key in SYSTEM_PROPERTIES:
            system[SYSTEM_PROPERTIES[key]] = value or ""
        else:
            application[key] = value
    return system, application


def encode_property_bag(properties: dict[str, str | None]) -> str:
    """Encode like the real hub: `key=value`, `key=` for empty, bare `key` for None."""
    items = []
    for key, value in properties.items():
        name = quote(key, safe="")
        items.append(name if value is None else f"{name}={quote(value, safe='')}")
    return "&".join(items)


def _rid_of(query: str, topic: str) -> str:
    fields = dict(part.partition("=")[::2] for part in query.split("&") if part)
    rid = fields.get("$rid", "")
    if not rid:
        raise ProtocolViolation(f"topic {topic!r} has no $rid")
    return rid


def classify_publish(device_id: str, topic: str) -> Request:
    """Map a device's PUBLISH topic to the request it stands for, or refuse it."""
    if topic.startswith("$iothub/"):
        path, sep, query = topic.partition("/?")
        if not sep:
            raise ProtocolViolation(f"topic {topic!r} has no query")
        if path == "$iothub/twin/GET":
            return TwinGet(_rid_of(query, topic))
        if path == "$iothub/twin/PATCH/properties/reported":
            return TwinPatchReported(_rid_of(query, topic))
        parts = path.split("/")
        if len(parts) == 4 and parts[1:3] == ["methods", "res"] and parts[3].isdigit():
            return MethodResponse(_rid_of(query, topic), int(parts[3]))
        raise ProtocolViolation(f"topic {topic!r} is not an IoT Hub topic")
    prefix = f"devices/{device_id}/messages/events"
    if topic == prefix or topic.startswith(prefix + "/"):
        bag = topic[len(prefix) + 1 :]
        try:
            system, application = parse_property_bag(bag)
        except UnicodeDecodeError as exc:
            raise ProtocolViolation("property bag is not valid UTF-8") from exc
        return D2CRequest(system, application)
    raise ProtocolViolation(f"device {device_id!r} may not publish to {topic!r}")


def classify_subscription(device_id: str, topic_filter: str) -> Subscription:
    if topic_filter == f"devices/{device_id}/messages/devicebound/#":
        return Subscription.C2D
    if topic_filter == "$iothub/twin/res/#":
        return Subscription.TWIN_RESPONSES
    if topic_filter == "$iothub/twin/PATCH/properties/desired/#":
        return Subscription.DESIRED_PATCHES
    if topic_filter == "$iothub/methods/POST/#":
        return Subscription.METHODS
    raise ProtocolViolation(f"device {device_id!r} may not subscribe to {topic_filter!r}")


def twin_response_topic(status: int, rid: str, version: int | None = None) -> str:
    suffix = "" if version is None else f"&$version={version}"
    return f"$iothub/twin/res/{status}/?$rid={rid}{suffix}"


def desired_patch_topic(version: int) -> str:
    return f"$iothub/twin/PATCH/properties/desired/?$version={version}"


def method_request_topic(method_name: str, rid: str) -> str:
    return f"$iothub/methods/POST/{method_name}/?$rid={rid}"


def c2d_topic(device_id: str, properties: dict[str, str | None]) -> str:
    return f"devices/{device_id}/messages/devicebound/{encode_property_bag(properties)}"
