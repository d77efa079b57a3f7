"""The IoT Hub MQTT dialect on the device side, without I/O.

Connection strings, SAS tokens, CONNECT fields, topic names, property bags, and the bookkeeping
of request ids: intents go in and become (topic, payload, qos) to publish; received (topic,
payload) become events. `device_agent.hub_client` is the paho-mqtt driver around it.
Facts from `shared/reference/azure-iot-hub-protocol.md` §1.

Invariants:
- A response is matched to its request by `$rid`; a response to no pending request is dropped.
- The SAS signature covers `sr` exactly as sent (URL-encoded resource URI) and the expiry.
- Topic and property parsing raise only `DialectError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

__all__ = [
    "API_VERSION",
    "ConnectionString",
    "DialectError",
    "HubDialect",
    "Incoming",
    "Outgoing",
    "encode_properties",
    "sas_token",
]

API_VERSION = "2021-04-12"


class DialectError(ValueError):
    pass


@dataclass(frozen=True)
class ConnectionString:
    host_name: str
    device_id: str
    shared_access_key: str | None = None
    gateway_host_name: str | None = None
    x509: bool = False

    @classmethod
    def parse(cls, text: str) -> ConnectionString:
        fields: dict[str, str] = {}
        for part in text.strip().split(";"):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not value:
                raise DialectError(f"connection string part {key!r} has no value")
            fields[key] = value
        missing = {"HostName", "DeviceId"} - set(fields)
        if missing:
            raise DialectError(f"connection string lacks {', '.join(sorted(missing))}")
        x509 = fields.get("x509", "").lower() == "true"
        if "SharedAccessKey" not in fields and not x509:
            raise DialectError("connection string has neither SharedAccessKey nor x509=true")
        if "SharedAccessKey" in fields:
            try:
                base64.b64decode(fields["SharedAccessKey"], validate=True)
            except ValueError as exc:
                raise DialectError("SharedAccessKey is not base64") from exc
        return cls(
            fields["HostName"],
            fields["DeviceId"],
            fields.get("SharedAccessKey"),
            fields.get("GatewayHostName"),
            x509,
        )

    @property
    def connect_host(self) -> str:
        return self.gateway_host_name or self.host_name

    @property
    def username(self) -> str:
        return f"{self.host_name}/{self.device_id}/?api-version={API_VERSION}"

    def password(self, now: float, ttl_s: int = 3600) -> str | None:
        if self.shared_access_key is None:
            return None
        return sas_token(
            f"{self.host_name}/devices/{self.device_id}", self.shared_access_key, int(now) + ttl_s
        )


def sas_token(resource: str, key: str, expiry: int) -> str:
    sr = quote(resource, safe="")
    digest = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"


def encode_properties(properties: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in properties.items())


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True)
class Incoming:
    kind: str  # twin (a GET response), reported (a PATCH response), desired, method, c2d
    status: int = 0
    rid: str = ""
    body: bytes = b""
    name: str = ""  # method name
    version: int | None = None
    properties: dict[str, str] = field(default_factory=dict)


class HubDialect:
    """Request ids, topics and parsing for one device's session."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._rids = itertools.count(1)
        self._pending: dict[str, str] = {}  # rid -> "twin" | "reported"

    def subscriptions(self) -> list[tuple[str, int]]:
        return [
            ("$iothub/twin/res/#", 0),
            ("$iothub/twin/PATCH/properties/desired/#", 0),
            ("$iothub/methods/POST/#", 0),
            (f"devices/{self.device_id}/messages/devicebound/#", 1),
        ]

    def _request(self, kind: str) -> str:
        rid = str(next(self._rids))
        self._pending[rid] = kind
        return rid

    def get_twin(self) -> tuple[str, Outgoing]:
        rid = self._request("twin")
        return rid, Outgoing(f"$iothub/twin/GET/?$rid={rid}", b"", 0)

    def patch_reported(self, body: bytes) -> tuple[str, Outgoing]:
        rid = self._request("reported")
        return rid, Outgoing(f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", body, 0)

    def telemetry(self, body: bytes, properties: dict[str, str]) -> Outgoing:
        bag = encode_properties(properties)
        return Outgoing(f"devices/{self.device_id}/messages/events/{bag}", body, 1)

    def method_response(self, rid: str, status: int, body: bytes) -> Outgoing:
        return Outgoing(f"$iothub/methods/res/{status}/?$rid={rid}", body, 0)

    def forget(self, rid: str) -> None:
        self._pending.pop(rid, None)

    def receive(self, topic: str, payload: bytes) -> Incoming | None:
        """Parse a received PUBLISH; None for a response nobody waits for."""
        if topic.startswith("$iothub/twin/res/"):
            status_text, _, query = topic[len("$iothub/twin/res/") :].partition("/?")
            params = dict(parse_qsl(query, keep_blank_values=True))
            rid = params.get("$rid", "")
            kind = self._pending.pop(rid, None)
            if kind is None:
                return None
            version = params.get("$version")
            return Incoming(
                kind,
                status=_int(status_text, topic),
                rid=rid,
                body=payload,
                version=_int(version, topic) if version else None,
            )
        if topic.startswith("$iothub/twin/PATCH/properties/desired/"):
            params = dict(parse_qsl(topic.partition("?")[2]))
            version = params.get("$version")
            return Incoming(
                "desired", body=payload, version=_int(version, topic) if version else None
            )
        if topic.startswith("$iothub/methods/POST/"):
            name, _, query = topic[len("$iothub/methods/POST/") :].partition("/?")
            rid = dict(parse_qsl(query)).get("$rid", "")
            if not name or not rid:
                raise DialectError(f"method request without name or $rid: {topic}")
            return Incoming("method", rid=rid, name=name, body=payload)
        prefix = f"devices/{self.device_id}/messages/devicebound/"
        if topic.startswith(prefix):
            bag = topic[len(prefix) :]
            props = {}
            for part in filter(None, bag.split("&")):
                key, _, value = part.partition("=")
                props[unquote(key)] = unquote(value)  # never unquote_plus: '+' stays '+'
            return Incoming("c2d", body=payload, properties=props)
        raise DialectError(f"unexpected topic {topic!r}")


def _int(text: str, topic: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise DialectError(f"not a number in {topic!r}") from exc
