"""One device's MQTT session on the hub, as a state machine written as a table.

Pure: decoded packets and authentication verdicts in, effects out; time is a parameter.

    AWAIT_CONNECT --Connect--> AUTHENTICATING --AuthAccepted--> OPEN --Disconnect--> CLOSED
                                              \\-AuthRefused--> CLOSED

Any (state, event) pair missing from the table raises `ProtocolViolation` naming both, and the
session becomes CLOSED: the driver closes the connection without a DISCONNECT, as the real hub does.

Invariants:
- Nothing but CONNECT is accepted before authentication; a second CONNECT is a violation.
- Every PUBLISH and SUBSCRIBE of an OPEN session is checked against the router for the session's
  own identity; QoS 2 is a violation; RETAIN is forwarded as the `mqtt-retain` property.
- Telemetry at QoS 1 is not acknowledged here: the `Deliver` effect carries the packet id and the
  hub sends PUBACK only after the message is stored.
- Outbound QoS 1 packet ids are unique among the in-flight ones; a PUBACK yields the token that
  was attached to the message (the C2D queue entry), once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from infra.hub import _codec as mqtt
from infra.hub._errors import ProtocolViolation
from infra.hub._router import (
    D2CRequest,
    Request,
    Subscription,
    classify_publish,
    classify_subscription,
)

__all__ = [
    "Acknowledged",
    "AuthAccepted",
    "AuthRefused",
    "Authenticate",
    "Close",
    "Deliver",
    "DeviceSession",
    "Send",
    "SessionState",
    "SubscriptionsChanged",
]

CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_NOT_AUTHORIZED = 5
_MAX_KEEPALIVE_S = 1767  # the hub's own cap (reference §1.1)


class SessionState(enum.Enum):
    AWAIT_CONNECT = "await-connect"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class AuthAccepted:
    device_id: str
    session_present: bool
    subscriptions: frozenset[Subscription] = frozenset()


@dataclass(frozen=True, slots=True)
class AuthRefused:
    return_code: int = CONNACK_NOT_AUTHORIZED


@dataclass(frozen=True, slots=True)
class Send:
    packet: mqtt.Packet


@dataclass(frozen=True, slots=True)
class Close:
    reason: str
    clean: bool = False


@dataclass(frozen=True, slots=True)
class Authenticate:
    connect: mqtt.Connect


@dataclass(frozen=True, slots=True)
class Deliver:
    request: Request
    payload: bytes
    packet_id: int | None  # set for QoS 1 telemetry: PUBACK after it is stored


@dataclass(frozen=True, slots=True)
class SubscriptionsChanged:
    subscriptions: frozenset[Subscription]
    added: frozenset[Subscription]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    token: object


Effect = Send | Close | Authenticate | Deliver | SubscriptionsChanged | Acknowledged
Event = mqtt.Packet | AuthAccepted | AuthRefused


@dataclass(slots=True)
class DeviceSession:
    """The hub's side of one MQTT connection."""

    max_d2c_bytes: int = 256 * 1024
    max_subscriptions: int = 5
    state: SessionState = SessionState.AWAIT_CONNECT
    device_id: str | None = None
    clean_session: bool = True
    keepalive_s: int = 0
    will: mqtt.Will | None = None
    subscriptions: frozenset[Subscription] = frozenset()
    last_seen: float = 0.0
    _inflight: dict[int, object] = field(default_factory=dict)
    _next_packet_id: int = 1

    def handle(self, event: Event, now: float) -> list[Effect]:
        handler = _TABLE.get((self.state, type(event)))
        if handler is None:
            previous, self.state = self.state, SessionState.CLOSED
            raise ProtocolViolation(
                f"{type(event).__name__} is not allowed in state {previous.value}"
            )
        self.last_seen = now
        try:
            return handler(self, event)
        except ProtocolViolation:
            self.state = SessionState.CLOSED
            raise

    def keepalive_expired(self, now: float) -> bool:
        """MQTT-3.1.2-24: no packet within one and a half keep-alive periods."""
        if self.state is not SessionState.OPEN or not self.keepalive_s:
            return False
        return now - self.last_seen > 1.5 * min(self.keepalive_s, _MAX_KEEPALIVE_S)

    def outbound(
        self, topic: str, payload: bytes, *, qos: int, token: object = None
    ) -> mqtt.Publish:
        """A PUBLISH to the device; at QoS 1 the token comes back in `Acknowledged` on PUBACK."""
        if self.state is not SessionState.OPEN:
            raise ProtocolViolation(f"cannot publish to a session in state {self.state.value}")
        if qos == 0:
            return mqtt.Publish(topic, payload, 0)
        packet_id = self._allocate_packet_id()
        self._inflight[packet_id] = token
        return mqtt.Publish(topic, payload, 1, packet_id=packet_id)

    def inflight_tokens(self) -> list[object]:
        return list(self._inflight.values())

    def _allocate_packet_id(self) -> int:
        if len(self._inflight) >= 65535:
            raise ProtocolViolation("no free packet identifier")
        while self._next_packet_id in self._inflight:
            self._next_packet_id = self._next_packet_id % 65535 + 1
        packet_id = self._next_packet_id
        self._next_packet_id = packet_id % 65535 + 1
        return packet_id

    # --- handlers, one per table row ------------------------------------------------------------

    def _on_connect(self, packet: mqtt.Connect) -> list[Effect]:
        if packet.protocol_name != "MQTT" or packet.protocol_level != 4:
            self.state = SessionState.CLOSED
            refuse = mqtt.ConnAck(False, CONNACK_BAD_PROTOCOL)
            return [Send(refuse), Close("unsupported protocol version")]
        if not packet.client_id:
            self.state = SessionState.CLOSED
            refuse = mqtt.ConnAck(False, CONNACK_IDENTIFIER_REJECTED)
            return [Send(refuse), Close("empty client id")]
        self.clean_session = packet.clean_session
        self.keepalive_s = packet.keepalive
        self.will = packet.will
        self.state = SessionState.AUTHENTICATING
        return [Authenticate(packet)]

    def _on_accepted(self, verdict: AuthAccepted) -> list[Effect]:
        if self.will is not None:
            request = classify_publish(verdict.device_id, self.will.topic)
            if not isinstance(request, D2CRequest):
                raise ProtocolViolation("a will must be a telemetry message")
        self.device_id = verdict.device_id
        self.subscriptions = frozenset() if self.clean_session else verdict.subscriptions
        self.state = SessionState.OPEN
        present = verdict.session_present and not self.clean_session
        return [Send(mqtt.ConnAck(present, CONNACK_ACCEPTED))]

    def _on_refused(self, verdict: AuthRefused) -> list[Effect]:
        self.state = SessionState.CLOSED
        return [Send(mqtt.ConnAck(False, verdict.return_code)), Close("not authorized")]

    def _on_publish(self, packet: mqtt.Publish) -> list[Effect]:
        if packet.qos == 2:
            raise ProtocolViolation("IoT Hub does not support QoS 2")
        assert self.device_id is not None
        request = classify_publish(self.device_id, packet.topic)
        if isinstance(request, D2CRequest):
            if len(packet.payload) > self.max_d2c_bytes:
                raise ProtocolViolation(f"telemetry of {len(packet.payload)} bytes is too large")
            if packet.retain:
                request.properties["mqtt-retain"] = "true"
            return [Deliver(request, packet.payload, packet.packet_id)]
        effects: list[Effect] = []
        if packet.packet_id is not None:
            effects.append(Send(mqtt.PubAck(packet.packet_id)))
        effects.append(Deliver(request, packet.payload, None))
        return effects

    def _on_puback(self, packet: mqtt.PubAck) -> list[Effect]:
        if packet.packet_id not in self._inflight:
            return []  # a late or duplicate PUBACK: MQTT allows it, nothing to do
        return [Acknowledged(self._inflight.pop(packet.packet_id))]

    def _on_subscribe(self, packet: mqtt.Subscribe) -> list[Effect]:
        assert self.device_id is not None
        wanted = [classify_subscription(self.device_id, f) for f, _ in packet.topics]
        updated = self.subscriptions | frozenset(wanted)
        if len(updated) > self.max_subscriptions:
            raise ProtocolViolation("too many subscriptions")
        added = updated - self.subscriptions
        self.subscriptions = updated
        granted = tuple(min(qos, 1) for _, qos in packet.topics)
        return [
            Send(mqtt.SubAck(packet.packet_id, granted)),
            SubscriptionsChanged(updated, added),
        ]

    def _on_unsubscribe(self, packet: mqtt.Unsubscribe) -> list[Effect]:
        assert self.device_id is not None
        removed = {classify_subscription(self.device_id, f) for f in packet.topics}
        self.subscriptions = self.subscriptions - removed
        return [
            Send(mqtt.UnsubAck(packet.packet_id)),
            SubscriptionsChanged(self.subscriptions, frozenset()),
        ]

    def _on_ping(self, _packet: mqtt.PingReq) -> list[Effect]:
        return [Send(mqtt.PingResp())]

    def _on_disconnect(self, _packet: mqtt.Disconnect) -> list[Effect]:
        self.will = None  # MQTT-3.14.4-3: a clean DISCONNECT discards the will
        self.state = SessionState.CLOSED
        return [Close("client disconnected", clean=True)]


_Handler = Callable[[DeviceSession, Event], list[Effect]]
_TABLE: dict[tuple[SessionState, type], _Handler] = {
    (SessionState.AWAIT_CONNECT, mqtt.Connect): DeviceSession._on_connect,  # type: ignore[dict-item]
    (SessionState.AUTHENTICATING, AuthAccepted): DeviceSession._on_accepted,  # type: ignore[dict-item]
    (SessionState.AUTHENTICATING, AuthRefused): DeviceSession._on_refused,  # type: ignore[dict-item]
    (SessionState.OPEN, mqtt.Publish): DeviceSession._on_publish,  # type: ignore[dict-item]
    (SessionState.OPEN, mqtt.PubAck): DeviceSession._on_puback,  # type: ignore[dict-item]
    (SessionState.OPEN, mqtt.Subscribe): DeviceSession._on_subscribe,  # type: ignore[dict-item]
    (SessionState.OPEN, mqtt.Unsubscribe): DeviceSession._on_unsubscribe,  # type: ignore[dict-item]
    (SessionState.OPEN, mqtt.PingReq): DeviceSession._on_ping,  # type: ignore[dict-item]
    (SessionState.OPEN, mqtt.Disconnect): DeviceSession._on_disconnect,  # type: ignore[dict-item]
}
