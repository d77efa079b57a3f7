"""The asyncio driver of device connections: TLS bytes in, session effects carried out.

It owns the socket and the clock; protocol decisions belong to `_codec`, `_session` and the
engine. A malformed packet or a protocol violation closes that one connection and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from infra.hub import _codec as mqtt
from infra.hub._config import HubLimits
from infra.hub._errors import ProtocolViolation
from infra.hub._hub import HubCore
from infra.hub._session import (
    Acknowledged,
    Authenticate,
    Close,
    Deliver,
    DeviceSession,
    Effect,
    Send,
    SessionState,
    SubscriptionsChanged,
)

__all__ = ["ConnectionTable", "MqttConnection"]

log = logging.getLogger("tinyfleet.hub.mqtt")


class ConnectionTable:
    """Every open connection, for limits, timeouts and shutdown."""

    def __init__(
        self,
        limits: HubLimits,
        defer: Callable[[Callable[[], None]], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.defer = defer  # run a callback soon on the hub's loop (coalesces writes)
        self.clock = clock
        self.open: set[MqttConnection] = set()

    def sweep(self) -> None:
        """Close connections that never sent CONNECT or outlived their keep-alive."""
        now = self.clock()
        for conn in list(self.open):
            session = conn.session
            if session.state is SessionState.AWAIT_CONNECT:
                if now - conn.opened > self.limits.connect_timeout_s:
                    conn.close("no CONNECT in time")
            elif session.keepalive_expired(now):
                conn.close("keep-alive expired")

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.close("hub shutting down")


class MqttConnection(asyncio.Protocol):
    def __init__(self, core: HubCore, table: ConnectionTable) -> None:
        self.core = core
        self.table = table
        limits = table.limits
        self.session = DeviceSession(
            max_d2c_bytes=limits.d2c_max_bytes, max_subscriptions=limits.max_subscriptions
        )
        self.decoder = mqtt.PacketDecoder(limits.max_packet_bytes)
        self.peer_certificate: bytes | None = None
        self.opened = table.clock()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._closing = False

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if len(self.table.open) >= self.table.limits.max_connections:
            log.warning("connection limit reached; refusing a connection")
            self._closing = True
            transport.abort()
            return
        self.table.open.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.peer_certificate = ssl_object.getpeercert(binary_form=True)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            packets = self.decoder.feed(data)
            now = self.table.clock()
            for packet in packets:
                self._run(self.session.handle(packet, now))
                if self._closing:
                    return
        except (mqtt.MalformedPacket, ProtocolViolation) as exc:
            log.info("closing %s: %s", self.session.device_id or "unauthenticated peer", exc)
            self.close(str(exc))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.table.open.discard(self)
        if self.session.device_id is not None:
            self.core.detach(self)

    # --- Link (what the engine calls) -------------------------------------------------------------

    def send(self, packet: mqtt.Packet) -> None:
        if self._closing or self._transport is None:
            return
        if not self._out:
            self.table.defer(self._write_out)
        self._out.append(mqtt.encode(packet))

    def close(self, reason: str) -> None:
        if self._closing or self._transport is None:
            return
        self._write_out()
        self._closing = True
        log.debug("closing connection of %s: %s", self.session.device_id, reason)
        self._transport.close()

    # --- effects --------------------------------------------------------------------------------

    def _write_out(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.send(effect.packet)
            elif isinstance(effect, Deliver):
                self.core.deliver(self, effect)
            elif isinstance(effect, Acknowledged):
                self.core.acknowledged(self, effect.token)
            elif isinstance(effect, SubscriptionsChanged):
                self.core.subscriptions_changed(self, effect.added)
            elif isinstance(effect, Authenticate):
                verdict = self.core.authenticate(effect.connect, self.peer_certificate)
                self._run(self.session.handle(verdict, self.table.clock()))
                if self.session.state is SessionState.OPEN:
                    self.core.attach(self)
            elif isinstance(effect, Close):
                if effect.clean:
                    self.core.detach(self)
                self.close(effect.reason)
