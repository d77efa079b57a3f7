"""The hub's engine: identities, live connections, twins, methods, C2D and the telemetry feed.

Both front ends call into it: the MQTT driver (one `Link` per device connection) and the REST
app (the service side). It owns the rule that `$iothub/...` traffic goes only to the connection
of the identity it belongs to, and the rule that telemetry is acknowledged only once stored.
It runs on one asyncio loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from infra.hub import _codec as mqtt
from infra.hub._auth import (
    POLICY_RIGHTS,
    parse_username,
)
from infra.hub._config import HubConfig
from infra.hub._errors import AuthenticationFailed, HubStorageError, RequestRefused
from infra.hub._feed import NewEvent, TelemetryFeed
from infra.hub._identity import check_device_credentials
from infra.hub._router import (
    D2CRequest,
    MethodResponse,
    Subscription,
    TwinGet,
    TwinPatchReported,
    c2d_topic,
    classify_publish,
    desired_patch_topic,
    method_request_topic,
    twin_response_topic,
)
from infra.hub._session import AuthAccepted, AuthRefused, Deliver, DeviceSession
from infra.hub._store import C2DMessage, DeviceRecord, HubStore
from infra.hub._twin import Twin, check_etag

__all__ = ["HubCore", "Link"]

log = logging.getLogger("tinyfleet.hub")
_METHOD_NAME = re.compile(r"^[!#%&'*+\-.0-9A-Z^_`a-z|~]{1,128}$")


class Link(Protocol):
    """One device connection, as the engine sees it."""

    session: DeviceSession
    peer_certificate: bytes | None

    def send(self, packet: mqtt.Packet) -> None: ...

    def close(self, reason: str) -> None: ...


@dataclass(slots=True)
class _Presence:
    connected: bool = False
    last_activity: float = 0.0
    changed: float = 0.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class _PendingMethod:
    device_id: str
    future: asyncio.Future[tuple[int, Any]]


@dataclass(slots=True)
class HubCore:
    config: HubConfig
    store: HubStore
    feed: TelemetryFeed
    clock: Callable[[], float] = time.time
    schedule: Callable[[Callable[[], None]], object] | None = None
    links: dict[str, Link] = field(default_factory=dict)
    presence: dict[str, _Presence] = field(default_factory=dict)
    policies: dict[str, tuple[str, str]] = field(default_factory=dict)
    _batch: list[tuple[Link, int | None, NewEvent]] = field(default_factory=list)
    _flush_scheduled: bool = False
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _methods: dict[str, _PendingMethod] = field(default_factory=dict)
    _rids: itertools.count[int] = field(default_factory=itertools.count)
    _c2d_inflight: dict[str, set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.policies = self.store.policies()
        for name in POLICY_RIGHTS:
            if name not in self.policies:
                keys = (_b64key(), _b64key())
                self.store.put_policy(name, *keys)
                self.policies[name] = keys

    # --- device authentication and presence ---------------------------------------------------

    def authenticate(
        self, connect: mqtt.Connect, peer_certificate: bytes | None
    ) -> AuthAccepted | AuthRefused:
        try:
            record = self.store.lookup_device(_claimed_device(connect))
            device_id = check_device_credentials(
                self.config.hostname, record, self.policies, connect, peer_certificate, self.clock()
            )
        except AuthenticationFailed as exc:
            log.info("refused CONNECT from %r: %s", connect.client_id, exc)
            return AuthRefused()
        stored = self.store.sessions.get(device_id)
        if connect.clean_session and stored is not None:
            self.store.drop_session(device_id)
        subscriptions = frozenset(Subscription(s) for s in stored or [])
        return AuthAccepted(device_id, stored is not None, subscriptions)

    def attach(self, link: Link) -> None:
        device_id = link.session.device_id
        assert device_id is not None
        previous = self.links.get(device_id)
        if previous is not None and previous is not link:
            self._forget(previous)
            previous.close("ConnectionForcefullyClosedOnNewConnection")
        self.links[device_id] = link
        now = self.clock()
        self.presence[device_id] = _Presence(True, now, now)
        if Subscription.C2D in link.session.subscriptions:
            self._deliver_c2d(link)

    def detach(self, link: Link) -> None:
        """The connection is gone; deliver its will unless it said DISCONNECT."""
        session = link.session
        if session.device_id is None or self.links.get(session.device_id) is not link:
            return
        self._forget(link)
        will = session.will
        if will is not None:
            bag_request = self._will_request(session.device_id, will)
            self._enqueue_event(link, None, bag_request, will.payload)

    def _forget(self, link: Link) -> None:
        device_id = link.session.device_id
        assert device_id is not None
        self.links.pop(device_id, None)
        self._c2d_inflight.pop(device_id, None)
        now = self.clock()
        self.presence[device_id] = _Presence(False, now, now)
        if not link.session.clean_session and device_id in self.store.devices:
            self._save_session(device_id, link.session.subscriptions)

    def _will_request(self, device_id: str, will: mqtt.Will) -> D2CRequest:
        request = classify_publish(device_id, will.topic)
        assert isinstance(request, D2CRequest)
        request.properties["iothub-MessageType"] = "Will"
        return request

    def _save_session(self, device_id: str, subscriptions: frozenset[Subscription]) -> None:
        try:
            self.store.put_session(device_id, sorted(s.value for s in subscriptions))
        except HubStorageError:
            log.exception("could not persist the session of %s", device_id)

    # --- device requests --------------------------------------------------------------------------

    def deliver(self, link: Link, effect: Deliver) -> None:
        device_id = link.session.device_id
        assert device_id is not None
        self.presence[device_id].last_activity = self.clock()
        request = effect.request
        if isinstance(request, D2CRequest):
            self._enqueue_event(link, effect.packet_id, request, effect.payload)
        elif isinstance(request, TwinGet):
            self._twin_get(link, device_id, request)
        elif isinstance(request, TwinPatchReported):
            self._twin_patch(link, device_id, request, effect.payload)
        elif isinstance(request, MethodResponse):
            self._method_response(device_id, request, effect.payload)

    def subscriptions_changed(self, link: Link, added: frozenset[Subscription]) -> None:
        device_id = link.session.device_id
        assert device_id is not None
        if not link.session.clean_session:
            self._save_session(device_id, link.session.subscriptions)
        if Subscription.C2D in added:
            self._deliver_c2d(link)

    def acknowledged(self, link: Link, token: object) -> None:
        if isinstance(token, C2DMessage):
            self._c2d_inflight.get(token.device_id, set()).discard(token.seq)
            try:
                self.store.complete_c2d(token.seq)
            except HubStorageError:
                log.exception("could not complete C2D message %s", token.seq)

    def _respond(
        self, link: Link, status: int, rid: str, body: bytes, version: int | None = None
    ) -> None:
        if Subscription.TWIN_RESPONSES in link.session.subscriptions:
            topic = twin_response_topic(status, rid, version)
            link.send(link.session.outbound(topic, body, qos=0))

    def _throttled(self, device_id: str) -> bool:
        limits, now = self.config.limits, self.clock()
        bucket = self._buckets.setdefault(device_id, _Bucket(limits.twin_ops_burst, now))
        bucket.tokens = min(
            limits.twin_ops_burst,
            bucket.tokens + (now - bucket.updated) * limits.twin_ops_per_second_per_device,
        )
        bucket.updated = now
        if bucket.tokens < 1:
            return True
        bucket.tokens -= 1
        return False

    def _twin_get(self, link: Link, device_id: str, request: TwinGet) -> None:
        if self._throttled(device_id):
            self._respond(link, 429, request.rid, b"")
            return
        body = json.dumps(self.store.twins[device_id].properties()).encode()
        self._respond(link, 200, request.rid, body)

    def _twin_patch(
        self, link: Link, device_id: str, request: TwinPatchReported, payload: bytes
    ) -> None:
        if self._throttled(device_id):
            self._respond(link, 429, request.rid, b"")
            return
        try:
            patch = json.loads(payload)
            twin = self.store.twins[device_id].patch_reported(patch, self.config.limits)
            self.store.put_twin(twin)
        except (ValueError, RecursionError):
            self._respond(link, 400, request.rid, _error_body("ArgumentInvalid", "bad JSON"))
            return
        except RequestRefused as exc:
            self._respond(link, exc.status, request.rid, _error_body(exc.code, exc.message))
            return
        except HubStorageError:
            log.exception("reported patch of %s not stored", device_id)
            self._respond(link, 500, request.rid, b"")
            return
        self._respond(link, 204, request.rid, b"", twin.reported_version)

    # --- telemetry: stored in batches, acknowledged after the commit ------------------------------

    def _enqueue_event(
        self, link: Link, packet_id: int | None, request: D2CRequest, body: bytes
    ) -> None:
        device_id = link.session.device_id
        assert device_id is not None
        now_ms = int(self.clock() * 1000)
        system = dict(request.system_properties)
        system["iothub-connection-device-id"] = device_id
        system["iothub-enqueuedtime"] = str(now_ms)
        system["iothub-message-source"] = "Telemetry"
        event = NewEvent(device_id, body, request.properties, system, now_ms)
        self._batch.append((link, packet_id, event))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self.schedule is None:
                self.flush()
            else:
                self.schedule(self.flush)

    def flush(self) -> None:
        batch, self._batch, self._flush_scheduled = self._batch, [], False
        if not batch:
            return
        try:
            self.feed.append([event for _, _, event in batch])
        except HubStorageError:
            log.exception("telemetry batch of %d not stored; closing its connections", len(batch))
            for link, _, _ in batch:
                link.close("telemetry could not be stored")
            return
        for link, packet_id, _ in batch:
            if packet_id is not None:
                link.send(mqtt.PubAck(packet_id))

    # --- cloud to device --------------------------------------------------------------------------

    def _deliver_c2d(self, link: Link) -> None:
        device_id = link.session.device_id
        assert device_id is not None
        inflight = self._c2d_inflight.setdefault(device_id, set())
        for message in self.store.pending_c2d(device_id):
            if message.seq in inflight:
                continue
            inflight.add(message.seq)
            topic = c2d_topic(device_id, message.properties)
            link.send(link.session.outbound(topic, message.payload, qos=1, token=message))

    def send_c2d(self, device_id: str, payload: bytes, properties: dict[str, str | None]) -> str:
        record = self.device(device_id)
        if len(payload) > self.config.limits.c2d_max_bytes:
            raise RequestRefused(413, "MessageTooLarge", "C2D messages are limited to 64 KB")
        if self.store.count_c2d(record.device_id) >= self.config.limits.c2d_max_pending:
            raise RequestRefused(403, "DeviceMaximumQueueDepthExceeded", "50 messages pending")
        message_id = properties.get("$.mid") or secrets.token_hex(16)
        ordered: dict[str, str | None] = {"$.mid": message_id}
        ordered["$.to"] = f"/devices/{device_id}/messages/deviceBound"
        ordered.update({k: v for k, v in properties.items() if k != "$.mid"})
        self.store.enqueue_c2d(device_id, payload, ordered, self.clock())
        link = self.links.get(device_id)
        if link is not None and Subscription.C2D in link.session.subscriptions:
            self._deliver_c2d(link)
        return message_id

    # --- direct methods ---------------------------------------------------------------------------

    async def invoke_method(
        self, device_id: str, name: str, payload: Any, timeout_s: int
    ) -> tuple[int, Any]:
        self.device(device_id)
        limits = self.config.limits
        if not _METHOD_NAME.match(name):
            raise RequestRefused(400, "ArgumentInvalid", f"method name {name!r} is not allowed")
        if not limits.method_timeout_min_s <= timeout_s <= limits.method_timeout_max_s:
            raise RequestRefused(
                400,
                "ArgumentInvalid",
                f"responseTimeoutInSeconds must be in "
                f"[{limits.method_timeout_min_s}, {limits.method_timeout_max_s}]",
            )
        body = b"" if payload is None else json.dumps(payload).encode()
        if len(body) > limits.method_payload_max_bytes:
            raise RequestRefused(413, "MessageTooLarge", "method payloads are limited to 128 KB")
        link = self.links.get(device_id)
        if link is None or Subscription.METHODS not in link.session.subscriptions:
            raise RequestRefused(404, "DeviceNotOnline", f"device {device_id!r} is not online")
        rid = str(next(self._rids))
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._methods[rid] = _PendingMethod(device_id, future)
        try:
            link.send(link.session.outbound(method_request_topic(name, rid), body, qos=0))
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            raise RequestRefused(504, "GatewayTimeout", f"{device_id!r} did not answer") from exc
        finally:
            self._methods.pop(rid, None)

    def _method_response(self, device_id: str, response: MethodResponse, payload: bytes) -> None:
        pending = self._methods.get(response.rid)
        if pending is None or pending.device_id != device_id or pending.future.done():
            return  # late, unknown, or another device's request id: never cross identities
        try:
            value = json.loads(payload) if payload.strip() else None
        except ValueError:
            value = payload.decode("utf-8", errors="replace")
        pending.future.set_result((response.status, value))

    # --- service-side twins -----------------------------------------------------------------------

    def device(self, device_id: str) -> DeviceRecord:
        record = self.store.lookup_device(device_id)
        if record is None:
            raise RequestRefused(404, "DeviceNotFound", f"device {device_id!r} is not registered")
        return record

    def update_twin(
        self, device_id: str, body: Any, if_match: str | None, *, replace_all: bool
    ) -> Twin:
        self.device(device_id)
        twin = self.store.twins[device_id]
        check_etag(if_match, twin.etag)
        if not isinstance(body, dict):
            raise RequestRefused(400, "ArgumentInvalid", "a twin must be a JSON object")
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            raise RequestRefused(400, "ArgumentInvalid", "properties must be a JSON object")
        desired = properties.get("desired")
        updated = twin.patch_service(
            body.get("tags"), desired, self.config.limits, replace_all=replace_all
        )
        if updated is twin:
            return twin
        self.store.put_twin(updated)
        notification = updated.desired_notification(twin, desired, full=replace_all)
        link = self.links.get(device_id)
        if (
            notification is not None
            and link is not None
            and Subscription.DESIRED_PATCHES in link.session.subscriptions
        ):
            topic = desired_patch_topic(updated.desired_version)
            link.send(link.session.outbound(topic, json.dumps(notification).encode(), qos=0))
        return updated

    def disconnect_device(self, device_id: str, reason: str) -> None:
        link = self.links.get(device_id)
        if link is not None:
            self._forget(link)
            link.close(reason)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"errorCode": code, "message": message}).encode()


def _b64key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _claimed_device(connect: mqtt.Connect) -> str:
    """The device id a CONNECT claims (checked in full by `check_device_credentials`)."""
    try:
        return parse_username(connect.username or "").device_id
    except AuthenticationFailed:
        return ""
