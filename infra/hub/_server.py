"""Runs the hub: the MQTT/TLS listener, the HTTPS REST listener, storage, and `hub.json`.

`HubServer` runs on the caller's event loop; `BackgroundHub` runs one in a thread (tests, demos).
Both bind the configured host and ports; port 0 means "any free port", read back after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from infra.hub._certs import CertificatePaths, ensure_ca, ensure_server_certificate
from infra.hub._config import HubConfig
from infra.hub._errors import HubConfigError
from infra.hub._feed import TelemetryFeed
from infra.hub._files import private_dir, write_private
from infra.hub._hub import HubCore
from infra.hub._mqtt_driver import ConnectionTable, MqttConnection
from infra.hub._rest import build_rest_app
from infra.hub._store import HubStore
from infra.hub._tls import TlsServerProtocol

__all__ = ["BackgroundHub", "HubServer", "service_connection_string"]

log = logging.getLogger("tinyfleet.hub")
T = TypeVar("T")


def service_connection_string(https_port: int, policy: str, key: str) -> str:
    return f"HostName=localhost:{https_port};SharedAccessKeyName={policy};SharedAccessKey={key}"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: without it a small TLS response waits out the client's
    # delayed ACK (about 40 ms per REST call through the SDK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HubConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _device_tls_context(
    server: CertificatePaths, ca: CertificatePaths, extra_cas: Path
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server.cert, server.key)
    # Client certificates are optional (SAS devices send none); when sent they must chain to the
    # hub CA or a CA in `trusted-cas/`; PARTIAL_CHAIN lets a self-signed device cert placed there
    # be trusted as itself.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cafile=str(ca.cert))
    if extra_cas.is_dir():
        for pem in sorted(extra_cas.glob("*.pem")):
            context.load_verify_locations(cafile=str(pem))
    return context


class HubServer:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.core: HubCore | None = None
        self.mqtt_port = 0
        self.https_port = 0
        self._mqtt: asyncio.Server | None = None
        self._rest: uvicorn.Server | None = None
        self._rest_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._table: ConnectionTable | None = None
        self.ca_cert: Path | None = None

    async def start(self) -> None:
        config = self.config
        private_dir(config.data_dir)
        ca = ensure_ca(config.certs_dir)
        server_cert = ensure_server_certificate(config.certs_dir, config.hostname)
        self.ca_cert = ca.cert
        store = HubStore(config.db_path)
        feed = TelemetryFeed.open(config.feed_path, config.partition_count)
        loop = asyncio.get_running_loop()
        self.core = core = HubCore(config, store, feed, schedule=loop.call_soon)
        self._table = table = ConnectionTable(config.limits, loop.call_soon)

        mqtt_sock = _bind(config.bind_host, config.mqtt_port)
        rest_sock = _bind(config.bind_host, config.https_port)
        self.mqtt_port = mqtt_sock.getsockname()[1]
        self.https_port = rest_sock.getsockname()[1]
        device_tls = _device_tls_context(server_cert, ca, config.trusted_cas_dir)
        handshake_timeout = config.limits.tls_handshake_timeout_s
        self._mqtt = await loop.create_server(
            lambda: TlsServerProtocol(
                device_tls,
                lambda: MqttConnection(core, table),
                handshake_timeout,
                loop.call_later,
            ),
            sock=mqtt_sock,
        )
        rest_config = uvicorn.Config(
            build_rest_app(core, lambda: self.https_port),
            ssl_certfile=str(server_cert.cert),
            ssl_keyfile=str(server_cert.key),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._rest = uvicorn.Server(rest_config)
        self._rest_task = asyncio.create_task(self._rest.serve(sockets=[rest_sock]))
        while not self._rest.started:
            if self._rest_task.done():
                self._rest_task.result()
                raise HubConfigError("the REST listener stopped during start")
            await asyncio.sleep(0.01)
        self._sweeper = asyncio.create_task(self._sweep())
        self._write_hub_json()
        log.info("hub %s: MQTT %d, HTTPS %d", config.hostname, self.mqtt_port, self.https_port)

    def _write_hub_json(self) -> None:
        assert self.core is not None
        owner_key = self.core.policies["iothubowner"][0]
        info = {
            "hostname": self.config.hostname,
            "gateway_hostname": "localhost",
            "bind_host": self.config.bind_host,
            "mqtt_port": self.mqtt_port,
            "https_port": self.https_port,
            "ca_cert": str(self.ca_cert),
            "service_connection_string": service_connection_string(
                self.https_port, "iothubowner", owner_key
            ),
            "feed": str(self.config.feed_path),
            "partition_count": self.config.partition_count,
            "pid": os.getpid(),
        }
        write_private(
            self.config.data_dir / "hub.json", (json.dumps(info, indent=2) + "\n").encode()
        )

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._table is not None:
                self._table.sweep()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._mqtt is not None:
            self._mqtt.close()
            if self._table is not None:
                self._table.close_all()
                # Let connection_lost run (sessions saved, wills stored) before storage closes.
                for _ in range(100):
                    if not self._table.open:
                        break
                    await asyncio.sleep(0.02)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mqtt.wait_closed(), 5)
        if self._rest is not None and self._rest_task is not None:
            self._rest.should_exit = True
            # Idle keep-alive connections of SDK clients would hold a graceful exit for seconds.
            self._rest.force_exit = True
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._rest_task, 5)
        if self.core is not None:
            self.core.flush()
            self.core.store.close()
            self.core.feed.close()

    async def serve_forever(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


class BackgroundHub:
    """A `HubServer` on its own event loop thread; `call` runs code on that loop."""

    def __init__(self, config: HubConfig) -> None:
        self.server = HubServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mock-hub", daemon=True)

    def __enter__(self) -> BackgroundHub:
        self._thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    @property
    def core(self) -> HubCore:
        assert self.server.core is not None
        return self.server.core

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Any, *args: Any, timeout: float = 30, **kwargs: Any) -> Any:
        future: Future[Any] = Future()

        def invoke() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed back to the calling thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(invoke)
        return future.result(timeout)

    def wait_until(self, predicate: Any, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(predicate):
                return True
            time.sleep(0.02)
        return False
