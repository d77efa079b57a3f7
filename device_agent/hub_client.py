"""The device's IoT Hub session over paho-mqtt: TLS, SAS or X.509, clean session 0, reconnects.

A thin driver around `HubDialect`: it owns the socket, the threads and the clock. Reconnects use
exponential back-off with full jitter, and every connect signs a fresh SAS token. Callbacks run on
a worker thread, never on paho's network thread, so a slow handler cannot stall keep-alives.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_agent.hub_dialect import ConnectionString, DialectError, HubDialect, Incoming, Outgoing

__all__ = ["HubClient", "HubError", "HubOptions"]

log = logging.getLogger(__name__)


class HubError(RuntimeError):
    """The hub did not answer, refused, or the link is down; the caller retries later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HubOptions:
    ca_file: Path
    port: int = 8883
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 60
    request_timeout_s: float = 10.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    sas_ttl_s: int = 3600


MethodHandler = Callable[[str, bytes], tuple[int, bytes]]


class HubClient:
    def __init__(
        self,
        connection: ConnectionString,
        options: HubOptions,
        *,
        on_desired: Callable[[dict[str, Any]], None],
        on_method: MethodHandler,
        on_connected: Callable[[], None] = lambda: None,
    ) -> None:
        self.connection = connection
        self.options = options
        self._dialect = HubDialect(connection.device_id)
        self._on_desired, self._on_method, self._on_connected = on_desired, on_method, on_connected
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=connection.device_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=str(options.ca_file))
        if options.cert_file is not None:
            context.load_cert_chain(str(options.cert_file), str(options.key_file))
        self._client.tls_set_context(context)
        self._client.on_connect = self._connected
        self._client.on_message = self._message
        self._client.on_disconnect = self._disconnected
        self.connected = threading.Event()
        self._stopped = threading.Event()
        self._waiting: dict[str, tuple[threading.Event, list[Incoming]]] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hub-callbacks")
        self._thread: threading.Thread | None = None
        self.link_errors = 0
        self._had_session = False
        self.refused: int | None = None  # the last CONNACK refusal code

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hub-session", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        attempt = 0
        while not self._stopped.is_set():
            password = self.connection.password(time.time(), self.options.sas_ttl_s)
            self._client.username_pw_set(self.connection.username, password)
            try:
                self._client.connect(
                    self.connection.connect_host,
                    self.options.port,
                    keepalive=self.options.keepalive_s,
                )
                self._client.loop_forever(retry_first_connection=False)
            except (OSError, ssl.SSLError) as exc:
                log.info("hub connect failed: %s", exc)
            self.connected.clear()
            if self._stopped.is_set():
                break
            self.link_errors += 1
            attempt = 0 if self._had_session else attempt + 1
            self._had_session = False
            ceiling = min(self.options.backoff_max_s, self.options.backoff_min_s * 2**attempt)
            self._stopped.wait(random.uniform(self.options.backoff_min_s / 2, ceiling))

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _connected(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: Any,
        _properties: object = None,
    ) -> None:
        if reason.is_failure:
            self.refused = int(reason.value)
            log.warning("hub refused the connection: %s", reason)
            client.disconnect()
            return
        self.refused = None
        self._had_session = True
        client.subscribe(self._dialect.subscriptions())
        self.connected.set()
        self._worker.submit(self._on_connected)

    def _disconnected(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: Any,
        _properties: object = None,
    ) -> None:
        self.connected.clear()
        with self._lock:
            for done, _ in self._waiting.values():
                done.set()  # waiting callers see no answer and raise

    def _message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            incoming = self._dialect.receive(message.topic, bytes(message.payload))
        except DialectError as exc:
            log.warning("dropped a message from the hub: %s", exc)
            return
        if incoming is None:
            return
        if incoming.kind in ("twin", "reported"):
            with self._lock:
                waiting = self._waiting.get(incoming.rid)
            if waiting is not None:
                waiting[1].append(incoming)
                waiting[0].set()
        elif incoming.kind == "desired":
            self._worker.submit(self._desired, incoming)
        elif incoming.kind == "method":
            self._worker.submit(self._method, incoming)

    def _desired(self, incoming: Incoming) -> None:
        try:
            document = json.loads(incoming.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("desired patch is not JSON; ignored")
            return
        self._on_desired(document)

    def _method(self, incoming: Incoming) -> None:
        try:
            status, body = self._on_method(incoming.name, incoming.body)
        except Exception as exc:  # a handler's bug must still answer the caller
            log.exception("method %s failed", incoming.name)
            status, body = 500, json.dumps({"error": str(exc)}).encode()
        self._publish(self._dialect.method_response(incoming.rid, status, body))

    # -- requests ---------------------------------------------------------------------------------

    def _publish(self, out: Outgoing) -> mqtt.MQTTMessageInfo:
        return self._client.publish(out.topic, out.payload, qos=out.qos)

    def _request(self, rid: str, out: Outgoing) -> Incoming:
        if not self.connected.is_set():
            self._dialect.forget(rid)
            raise HubError("not connected to the hub")
        done: threading.Event = threading.Event()
        answers: list[Incoming] = []
        with self._lock:
            self._waiting[rid] = (done, answers)
        try:
            self._publish(out)
            done.wait(self.options.request_timeout_s)
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
            self._dialect.forget(rid)
        if not answers:
            raise HubError("no answer from the hub")
        answer = answers[0]
        if answer.status >= 300:
            raise HubError(f"hub answered {answer.status}", answer.status)
        return answer

    def get_twin(self) -> dict[str, Any]:
        rid, out = self._dialect.get_twin()
        answer = self._request(rid, out)
        try:
            twin = json.loads(answer.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HubError("twin is not JSON") from exc
        if not isinstance(twin, dict):
            raise HubError("twin is not an object")
        return twin

    def patch_reported(self, body: bytes) -> int | None:
        rid, out = self._dialect.patch_reported(body)
        return self._request(rid, out).version

    def send_telemetry(self, body: bytes, properties: dict[str, str]) -> None:
        """Publish at QoS 1 and wait for the hub's PUBACK (then the batch is acknowledged)."""
        if not self.connected.is_set():
            raise HubError("not connected to the hub")
        info = self._publish(self._dialect.telemetry(body, properties))
        try:
            info.wait_for_publish(self.options.request_timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise HubError(f"telemetry not sent: {exc}") from exc
        if not info.is_published():
            raise HubError("telemetry not acknowledged by the hub")
