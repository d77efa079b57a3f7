"""The service runtime: the composition root of `tinyfleet serve` (and of `tinyfleet up`).

```python
runtime = ServiceRuntime(settings, hub=hub)       # hub None: from settings, or no engine
addresses = runtime.start()                       # API + blob server bound, loops running
...
runtime.stop()                                    # loops, servers, storage, in reverse order
```
It composes, from one `Settings`: storage (`open_storage` after migrations), the blob store
(filesystem served by `BlobServer` with signed URLs, or Azure for `azure://CONTAINER`), the
trust service (keys and repositories created on first start in dev mode), the release service,
the rollout engine and its dispatcher in a background loop, the registry sync loop, telemetry
ingestion when a source is given, and the HTTP API under uvicorn in a thread.

Audit: the chain's head is anchored outside the database (`audit_anchor`, default
`DATA/audit-anchor`) so that `audit verify` also catches deleted newest entries.

Bootstrap: on first start an `admin` token is created and its secret written to
`DATA/admin-token` (mode 0600); later starts reuse it while it stays valid.

Without a hub (none given, no connection string) there is no engine and no registry sync: the
API answers 503 `unavailable` for rollout changes and device sync.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn

from service.api import ApiContext, ApiLimits, create_app
from service.blobs import (
    CHUNK,
    AzureBlobStore,
    BlobConfigError,
    BlobError,
    BlobRepositoryStore,
    BlobServer,
    BlobStore,
    FilesystemBlobStore,
    UrlSigner,
)
from service.config import Settings
from service.engine import (
    Dispatcher,
    Engine,
    EngineConfig,
    EngineLoop,
    HealthGate,
    Notice,
    SigningDirector,
)
from service.hubgateway import HubGateway, SdkHubGateway
from service.registry import sync_registry
from service.releases import ReleaseService, publication_urls, repository_store
from service.storage import Role, Storage, open_storage, upgrade
from service.storage._anchor import AnchoredStorage, HeadAnchor
from service.telemetry import EventHubConfig, EventHubSource, LeaseConfig, build_telemetry
from service.trust import TrustService
from signing import PublishError
from signing.keys import DEV_PASSPHRASE, KeyScheme

__all__ = ["Addresses", "FreshDirector", "LogNotifier", "ServiceRuntime"]

_log = logging.getLogger("tinyfleet.runtime")
ADMIN_TOKEN_FILE = "admin-token"
BLOB_KEY_FILE = "blob-signing-key"
BLOB_PORT_FILE = "blob-port"
REGISTRY_INTERVAL = timedelta(seconds=30)
INGEST_INTERVAL = timedelta(milliseconds=200)
IMAGE_ROOT = "image/metadata/1.root.json"
API_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Addresses:
    api_url: str  # e.g. http://127.0.0.1:8080 (the API is under /api/v1)
    blob_url: str | None  # the filesystem blob server's /blobs/ base, None for Azure
    admin_token_file: Path
    admin_token: str  # the bootstrap admin secret
    admin_token_created: bool  # True on the start that created it (print it once)


class LogNotifier:
    """Operator notices go to the log (a webhook notifier can replace it)."""

    def notify(self, notice: Notice) -> None:
        _log.warning("rollout %r: %s: %r", notice.rollout_id, notice.kind, notice.message)


class FreshDirector:
    """The director port over the trust service's director repository, reopened when it does
    not know a release yet: releases published after the service started must be assignable
    (an open repository keeps the image metadata it read when it was opened)."""

    def __init__(self, trust: TrustService) -> None:
        self._trust = trust
        self._current: SigningDirector | None = None
        self._lock = threading.Lock()

    def _director(self, reopen: bool = False) -> SigningDirector:
        if self._current is None or reopen:
            self._current = SigningDirector(self._trust.director())
        return self._current

    def assign(self, device_id: str, hardware_id: str, release_id: str, now: datetime) -> None:
        with self._lock:
            try:
                self._director().assign(device_id, hardware_id, release_id, now)
            except PublishError:
                self._director(reopen=True).assign(device_id, hardware_id, release_id, now)

    def revoke(self, device_id: str, now: datetime) -> None:
        with self._lock:
            self._director().revoke(device_id, now)


class _Periodic:
    """Runs `step` every `interval` in a daemon thread until stopped; a failing step is logged
    and retried at the next interval (a port outage must not kill the loop)."""

    def __init__(self, name: str, interval: timedelta, step: Callable[[], object]) -> None:
        self._name = name
        self._interval = interval.total_seconds()
        self._step = step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                _log.exception("%s: step failed; retrying in %.1fs", self._name, self._interval)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


def _admin_names() -> Iterator[str]:
    yield "admin"
    yield from (f"admin-{n}" for n in itertools.count(2))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _copy_tree(root: Path, store: BlobRepositoryStore) -> int:
    copied = 0
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            with path.open("rb") as handle:
                store.put(path.relative_to(root).as_posix(), iter(lambda: handle.read(CHUNK), b""))
            copied += 1
    return copied


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class ServiceRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        hub: HubGateway | None = None,
        telemetry_source: Any | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self._hub = hub
        self._telemetry_source = telemetry_source
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.storage: Storage | None = None
        self.blobs: BlobStore | None = None
        self.engine: Engine | None = None
        self.context: ApiContext | None = None
        self._blob_server: BlobServer | None = None
        self._loops: list[_Periodic | EngineLoop] = []
        self._stoppers: list[Callable[[], None]] = []
        self._server: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None
        self.addresses: Addresses | None = None

    # -- composition ---------------------------------------------------------------------------

    def _open_storage(self) -> Storage:
        """The storage, its audit head anchored in `audit_anchor_path` (an in-memory database
        starts empty on every start, so it gets no anchor)."""
        url = self.settings.database_url
        if url == "memory:":
            return open_storage(url)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)
        storage = AnchoredStorage(open_storage(url), HeadAnchor(self.settings.audit_anchor_path))
        try:
            adopted = storage.adopt()
        except BaseException:
            storage.close()
            raise
        if adopted is not None:
            _log.warning(
                "audit: no anchor in %s yet; anchoring the current head (seq %d)",
                self.settings.audit_anchor_path,
                adopted.seq,
            )
        return storage

    def _blob_key(self) -> bytes:
        if self.settings.blob_signing_key is not None:
            return self.settings.blob_signing_key.get_secret_value().encode()
        path = self.settings.data_dir / BLOB_KEY_FILE
        if path.is_file():
            return bytes.fromhex(path.read_text().strip())
        key = secrets.token_bytes(32)
        _write_private(path, key.hex().encode())
        return key

    def _open_blobs(self) -> tuple[BlobStore, BlobStore]:
        """(the store the repositories publish into, the store drafts live in). On Azure a read
        grant covers a whole container, so drafts get a container of their own
        (`CONTAINER-drafts`); a filesystem grant covers only the `repo/` prefix."""
        s = self.settings
        if s.blob_url.startswith("azure://"):
            if s.blob_connection_string is None:
                raise ValueError("azure:// blob stores need blob_connection_string")
            container = s.blob_url.removeprefix("azure://").strip("/") or "tinyfleet"
            secret = s.blob_connection_string.get_secret_value()
            return (
                AzureBlobStore.from_connection_string(secret, container),
                AzureBlobStore.from_connection_string(secret, f"{container}-drafts"),
            )
        if not s.blob_serve:
            if not s.blob_public_url:
                raise ValueError("blob_serve off needs blob_public_url (where the store is served)")
            store = FilesystemBlobStore(s.blob_dir, UrlSigner(self._blob_key(), s.blob_public_url))
            return store, store
        server = self._bind_blob_server()
        self._blob_server = server
        signer = server.signer(s.blob_public_url or None)
        store = FilesystemBlobStore(s.blob_dir, signer)
        server.start(store)
        self._stoppers.append(server.stop)
        return store, store

    def _bind_blob_server(self) -> BlobServer:
        """The blob server on the configured port, else on the one the first start chose (kept
        in DATA/blob-port): the URLs offered to devices name it, so it must not move. A port
        someone else holds is an error, never a silent move to another one."""
        s = self.settings
        path = s.data_dir / BLOB_PORT_FILE
        port, source = s.blob_port, "blob_port (TINYFLEET_BLOB_PORT)"
        if port == 0 and path.is_file():
            text = path.read_text().strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 5) or not (
                0 < int(text) < 65536
            ):
                raise BlobConfigError(f"{path} holds no port number: {text[:20]!r}")
            port, source = int(text), str(path)
        try:
            server = BlobServer(
                self._blob_key(),
                host=s.api_host,
                port=port,
                timeout=s.blob_timeout.total_seconds(),
                max_connections=s.blob_max_connections,
            )
        except BlobConfigError as exc:
            raise BlobConfigError(
                f"{exc}; the port comes from {source} and is named in the blob URLs already "
                "offered to devices: free it, or choose another with TINYFLEET_BLOB_PORT "
                "(the URLs already offered then stop working)"
            ) from exc
        if port == 0:
            _write_private(path, f"{server.port}\n".encode())
        return server

    def _passphrase(self) -> str:
        if self.settings.key_passphrase is not None:
            return self.settings.key_passphrase.get_secret_value()
        if self.settings.dev_mode:
            return DEV_PASSPHRASE
        raise ValueError("production mode needs TINYFLEET_KEY_PASSPHRASE")

    def _trust(self, blobs: BlobStore, now: datetime) -> TrustService:
        """Both repositories publish into the blob store (devices fetch them there); the root
        anchors stay in the data directory, outside it. Repositories an earlier `tinyfleet repo
        init` made in `DATA/repo` are copied into the blob store once."""
        store = repository_store(blobs)
        trust = TrustService(self.settings, self._passphrase, store=store)
        if not store.exists(IMAGE_ROOT) and (self.settings.repo_dir / IMAGE_ROOT).is_file():
            copied = _copy_tree(self.settings.repo_dir, store)
            _log.warning("copied %d repository files from %s", copied, self.settings.repo_dir)
        if self.settings.dev_mode:
            if not (self.settings.keys_dir / "keystore.json").exists():
                _log.warning("dev mode: creating signing keys in %s", self.settings.keys_dir)
                trust.init_keys(KeyScheme.ED25519)
            if not store.exists(IMAGE_ROOT):
                _log.warning("dev mode: creating the image and director repositories")
                trust.init_repos(now)
        return trust

    def _hub_gateway(self) -> HubGateway | None:
        if self._hub is not None:
            return self._hub
        if self.settings.hub_connection_string is not None:
            return SdkHubGateway.from_connection_string(
                self.settings.hub_connection_string.get_secret_value()
            )
        return None

    def _releases(self, drafts: BlobStore, trust: TrustService, storage: Storage) -> ReleaseService:
        return ReleaseService(storage, drafts, trust, self.clock)

    def _engine_config(self, blobs: BlobStore) -> EngineConfig:
        """Where devices fetch the repositories: signed grants over the blob store's prefix."""
        holder = f"{socket.gethostname()}-{os.getpid()}"
        try:
            urls = publication_urls(blobs, self.settings.blob_url_ttl)
        except BlobError:
            _log.exception("the blob store cannot sign URLs; devices cannot fetch metadata")
            base = "http://blobs.invalid/repo/"
            return EngineConfig(
                image_url=f"{base}image/metadata/",
                director_url=f"{base}director/devices/{{device_id}}/metadata/",
                targets_url=f"{base}image/targets/",
                holder=holder,
            )
        return EngineConfig(
            image_url=urls.image_url,
            director_url=urls.director_url,
            targets_url=urls.targets_url,
            holder=holder,
            query=urls.query,
            device_query=urls.query_for,
        )

    def _start_engine(
        self,
        storage: Storage,
        hub: HubGateway,
        blobs: BlobStore,
        trust: TrustService,
        gate: HealthGate | None,
    ) -> Engine:
        config = self._engine_config(blobs)
        engine = Engine(storage, hub, config, gates=gate)
        dispatcher = Dispatcher(storage, hub, FreshDirector(trust), LogNotifier(), config)
        loop = EngineLoop(
            engine, dispatcher, interval=self.settings.engine_interval, clock=self.clock
        )
        self._loops.append(loop)
        # The signed grant in the URLs expires after blob_url_ttl: offers written later must
        # carry a fresh one (a retried offer gets it; the image metadata is TUF-signed anyway).
        refresh = self.settings.blob_url_ttl / 2
        self._loops.append(
            _Periodic(
                "url-grant", refresh, lambda: dispatcher.use_config(self._engine_config(blobs))
            )
        )
        return engine

    def _telemetry_feed(self) -> Any | None:
        if self._telemetry_source is not None:
            return self._telemetry_source
        s = self.settings
        if s.telemetry_source == "eventhub":
            if s.eventhub_connection_string is None:
                raise ValueError("telemetry_source eventhub needs eventhub_connection_string")
            config = EventHubConfig(
                s.eventhub_connection_string.get_secret_value(),
                consumer_group=s.eventhub_consumer_group,
            )
            return EventHubSource(config)
        return None

    def _telemetry_leases(self) -> LeaseConfig | None:
        """Lease mode: this process ingests its share of the feed's partitions."""
        s = self.settings
        if not s.telemetry_leases:
            return None
        if s.telemetry_worker_id:
            return LeaseConfig(ttl=s.telemetry_lease_ttl, worker_id=s.telemetry_worker_id)
        return LeaseConfig(ttl=s.telemetry_lease_ttl)

    def _admin_token(self, storage: Storage) -> tuple[str, bool]:
        path = self.settings.data_dir / ADMIN_TOKEN_FILE
        if path.is_file():
            secret = path.read_text().strip()
            with storage.begin(readonly=True) as uow:
                token = uow.tokens.verify(secret)
            if token is not None and token.role is Role.ADMIN:
                return secret, False
            _log.warning("%s holds no valid admin token; issuing a new one", path)
        with storage.begin() as uow:
            # Token names are unique (they are audit actors): "admin", else "admin-2", ...
            taken = {t.name for t in uow.tokens.list()}
            name = next(n for n in _admin_names() if n not in taken)
            issued = uow.tokens.create(name, Role.ADMIN, self.clock())
            uow.audit.append(
                at=self.clock(),
                actor="tinyfleet",
                action="token.create",
                subject=issued.token.id,
                details={"name": name, "role": "admin", "bootstrap": True},
            )
        _write_private(path, issued.secret.encode())
        return issued.secret, True

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Addresses:
        """Compose and start everything; returns where the API and blobs are served.

        Raises whatever a part raises while starting; what had started is stopped first.
        """
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Addresses:
        now = self.clock()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage = self._open_storage()
        blobs, drafts = self._open_blobs()
        self.blobs = blobs
        trust = self._trust(blobs, now)
        hub = self._hub_gateway()
        releases = self._releases(drafts, trust, storage)
        telemetry = build_telemetry(
            storage=storage.inner if isinstance(storage, AnchoredStorage) else storage,
            source=self._telemetry_feed(),
            clock=self.clock,
            leases=self._telemetry_leases(),
        )
        for worker in telemetry.workers:
            self._loops.append(_Periodic("ingest", INGEST_INTERVAL, worker.run_once))
            self._stoppers.append(worker.close)  # after the loop stopped: hand the leases over
        if hub is not None:
            self.engine = self._start_engine(storage, hub, blobs, trust, telemetry.gate)
            self._loops.append(
                _Periodic(
                    "registry",
                    REGISTRY_INTERVAL,
                    lambda: sync_registry(hub, storage, self.clock()),
                )
            )
        secret, created = self._admin_token(storage)
        self.context = ApiContext(
            storage=storage,
            engine=self.engine,
            releases=releases,
            telemetry=telemetry.store,
            hub=hub,
            clock=self.clock,
            limits=ApiLimits(max_json_body=self.settings.api_max_json_body),
        )
        api_url = self._serve_api(create_app(self.context, routers=[telemetry.router]))
        for loop in self._loops:
            loop.start()
        self.addresses = Addresses(
            api_url=api_url,
            blob_url=(
                self._blob_server.url
                if self._blob_server is not None
                else self.settings.blob_public_url or None
            ),
            admin_token_file=self.settings.data_dir / ADMIN_TOKEN_FILE,
            admin_token=secret,
            admin_token_created=created,
        )
        return self.addresses

    def _serve_api(self, app: Any) -> str:
        s = self.settings
        config = uvicorn.Config(
            app, host=s.api_host, port=s.api_port, log_level="warning", lifespan="off"
        )
        server = self._server = uvicorn.Server(config)
        # uvicorn installs signal handlers only in the main thread: ours stay with the caller.
        thread = self._api_thread = threading.Thread(target=server.run, name="api", daemon=True)
        thread.start()
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the API could not start on {s.api_host}:{s.api_port}")
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start in time")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://{_host_for_url(s.api_host)}:{port}"

    def stop(self) -> None:
        """Stop loops, then the API, then servers and storage. Safe to call twice."""
        for loop in reversed(self._loops):
            loop.stop()
        self._loops.clear()
        if self._server is not None:
            self._server.should_exit = True
            if self._api_thread is not None:
                self._api_thread.join(timeout=10)
            self._server = None
            self._api_thread = None
        for stopper in reversed(self._stoppers):
            try:
                stopper()
            except Exception:
                _log.exception("stopping a part failed")
        self._stoppers.clear()
        if self.storage is not None:
            self.storage.close()
            self.storage = None
