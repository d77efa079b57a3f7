"""The whole local stack in one process: mock hub, blob store, service runtime and a fleet.

`Stack(options).start()` brings up, in order: the mock IoT hub (MQTT/TLS and REST), the trust
repositories (dev keys, created on the first run), the blob store (the filesystem store with its
signed-URL server, or Azurite), the service runtime (API, rollout engine, dispatcher, registry
sync, telemetry ingestion from the hub's feed) and the simulated fleet. `stop()` takes them down
in the reverse order. Everything lives under one data folder:

    DATA/stack.json     the ports of the first run (a restart binds the same ones)
    DATA/hub/           the hub's registry, twins, sessions and telemetry feed
    DATA/service/       the service's keys, repositories, database and blobs
    DATA/fleet/         each device's identity, agent state and core slots

so a restart on the same folder brings everything back as it was. `restart_hub()` and
`restart_service()` take one part down and up again on the same ports (fault tests).

The service runtime is composed through `ServiceFactory` (the seam): by default
`service.runtime.ServiceRuntime`, given the settings, a hub gateway on the hub's service
connection string and a telemetry source on the hub's feed. Without it the stack runs hub, blob
store and fleet only, and says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from infra.fleet import Fleet, FleetOptions
from infra.fleet_host import FleetHosts, spawn_hosts
from infra.hub import BackgroundHub, HubConfig
from service.blobs import BlobServer, FilesystemBlobStore
from service.config import Settings
from service.trust import TrustService
from signing.files import atomic_write
from signing.keys import DEV_PASSPHRASE, KeyScheme

__all__ = [
    "AZURITE_CONNECTION_STRING",
    "ServiceFactory",
    "ServiceHandle",
    "Stack",
    "StackError",
    "StackOptions",
    "default_service_factory",
]

# Azurite's documented development account (not a secret: every Azurite install has it).
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


class StackError(RuntimeError):
    """The stack cannot start as configured (bad option, a part that failed to come up)."""


class ServiceHandle(Protocol):
    """A started-or-not service runtime: `start()` returns its addresses, `stop()` ends it."""

    def start(self) -> Any: ...  # the addresses: a mapping or a dataclass (api_url, ...)

    def stop(self) -> None: ...


ServiceFactory = Callable[[Settings, BackgroundHub], ServiceHandle]


def default_service_factory() -> ServiceFactory:
    """`service.runtime.ServiceRuntime` over the hub's gateway and feed."""
    from service.runtime import ServiceRuntime

    def build(settings: Settings, hub: BackgroundHub) -> ServiceHandle:
        from infra.telemetry_source import FeedSource
        from service.hubgateway import SdkHubGateway

        assert settings.hub_connection_string is not None
        gateway = SdkHubGateway.from_connection_string(
            settings.hub_connection_string.get_secret_value()
        )
        source = FeedSource.open(hub.server.config.feed_path)
        runtime: ServiceHandle = ServiceRuntime(
            settings, hub=gateway, telemetry_source=source, clock=lambda: datetime.now(UTC)
        )
        return runtime

    return build


@dataclass(frozen=True)
class StackOptions:
    data_dir: Path
    groups: dict[str, int] | None = None  # None: the devices of the earlier run
    db_url: str = ""
    blob: str = "filesystem"  # or "azurite"
    blob_connection_string: str = ""  # azurite: default is Azurite's well-known account
    api_port: int = 0
    engine_interval_s: float = 0.5
    fleet: FleetOptions = field(default_factory=FleetOptions)
    start_fleet: bool = True
    # 0: the fleet runs in this process; K > 0: in K fleet host processes (infra.fleet_host),
    # so thousands of devices are not all behind this process's interpreter lock.
    fleet_processes: int = 0

    def __post_init__(self) -> None:
        if self.blob not in ("filesystem", "azurite"):
            raise StackError(f"--blob must be filesystem or azurite, not {self.blob!r}")
        if self.fleet_processes < 0:
            raise StackError("--fleet-processes must be 0 (in this process) or more")


class Stack:
    def __init__(
        self, options: StackOptions, service_factory: ServiceFactory | bool | None = True
    ) -> None:
        """`service_factory`: True for the default runtime, False for none (hub,
        blob store and fleet only), or a factory of one's own (tests)."""
        self.options = options
        self.data_dir = options.data_dir
        self._factory: ServiceFactory | None
        if service_factory is True:
            self._factory = default_service_factory()
        elif service_factory is False:
            self._factory = None
        else:
            self._factory = service_factory
        self.hub: BackgroundHub | None = None
        self.blob_server: BlobServer | None = None
        self.service: ServiceHandle | None = None
        self.addresses: dict[str, Any] = {}
        self.fleet: Fleet | None = None
        self.fleet_hosts: FleetHosts | None = None
        self.trust: TrustService | None = None
        self.settings: Settings | None = None
        self._ports: dict[str, int] = {}

    # -- persisted ports and secrets ---------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.data_dir / "stack.json"

    def _load_ports(self) -> None:
        if self._state_path.is_file():
            self._ports = dict(json.loads(self._state_path.read_text()).get("ports", {}))

    def _save_ports(self) -> None:
        state = {"ports": self._ports}
        atomic_write(self._state_path, (json.dumps(state, indent=2) + "\n").encode())

    def _secret(self, name: str) -> bytes:
        path = self.data_dir / "service" / f"{name}.key"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, secrets.token_hex(32).encode())
            path.chmod(0o600)
        return path.read_bytes().strip()

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def service_available(self) -> bool:
        return self._factory is not None

    def start(self) -> dict[str, Any]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._load_ports()
        try:
            self._start_hub()
            self._start_trust()
            self._start_blobs()
            self.settings = self._settings()
            self._start_service()
            if self.options.start_fleet:
                self._start_fleet()
        except BaseException:
            self.stop()
            raise
        self._save_ports()
        return self.describe()

    def _start_hub(self) -> None:
        config = HubConfig(
            data_dir=self.data_dir / "hub",
            mqtt_port=self._ports.get("mqtt", 0),
            https_port=self._ports.get("https", 0),
        )
        self.hub = hub = BackgroundHub(config)
        hub.__enter__()
        self._ports["mqtt"], self._ports["https"] = hub.server.mqtt_port, hub.server.https_port
        # The azure-iot-hub SDK (the service's hub gateway) must trust the mock hub's CA.
        os.environ["REQUESTS_CA_BUNDLE"] = str(hub.server.ca_cert)

    def _start_trust(self) -> None:
        settings = Settings(data_dir=self.data_dir / "service")
        self.trust = trust = TrustService(settings, lambda: DEV_PASSPHRASE)
        if not (settings.keys_dir.is_dir() and any(settings.keys_dir.iterdir())):
            trust.init_keys(KeyScheme.ED25519)
        if not (settings.data_dir / "anchors" / "image-root.json").is_file():
            trust.init_repos(datetime.now(UTC))

    def _start_blobs(self) -> None:
        if self.options.blob != "filesystem":
            return
        server = BlobServer(self._secret("blob-signing"), port=self._ports.get("blob", 0))
        root = self.data_dir / "service" / "blobs"
        self.blob_server = server.start(FilesystemBlobStore(root, server.signer()))
        self._ports["blob"] = server.port

    def _settings(self) -> Settings:
        assert self.hub is not None
        info = json.loads((self.hub.server.config.data_dir / "hub.json").read_text())
        values: dict[str, Any] = {
            "data_dir": self.data_dir / "service",
            "db_url": self.options.db_url,
            "hub_connection_string": info["service_connection_string"],
            "telemetry_source": f"mockhub:{self.hub.server.config.feed_path}",
            "api_port": self._ports.get("api", self.options.api_port),
            "engine_interval": self.options.engine_interval_s,
        }
        if self.blob_server is not None:
            values["blob_url"] = f"file://{self.data_dir / 'service' / 'blobs'}"
            values["blob_public_url"] = self.blob_server.url
            values["blob_serve"] = False  # the stack's server, which outlives service restarts
            values["blob_signing_key"] = self._secret("blob-signing").decode()
        else:
            values["blob_url"] = "azure://tinyfleet"
            values["blob_connection_string"] = (
                self.options.blob_connection_string or AZURITE_CONNECTION_STRING
            )
        return Settings(**values)

    def _start_service(self) -> None:
        if self._factory is None or self.hub is None or self.settings is None:
            return
        self.service = self._factory(self.settings, self.hub)
        self.addresses = _as_dict(self.service.start())
        port = _port_of(self.addresses.get("api_url"))
        if port:
            self._ports["api"] = port

    def _start_fleet(self) -> None:
        assert self.hub is not None and self.trust is not None
        groups = self.options.groups
        if groups is None and not any((self.data_dir / "fleet").glob("*/identity.json")):
            groups = {"canary": 2, "main": 18}
        self.fleet = Fleet(
            self.hub,
            self.data_dir / "fleet",
            image_root=self.trust.image().root_bytes(),
            director_root=self.trust.director().root_bytes(),
            groups=groups,
            options=self.options.fleet,
        )
        if self.options.fleet_processes:
            self.fleet_hosts = spawn_hosts(self.fleet, self.options.fleet_processes)
        else:
            self.fleet.start()

    def stop(self) -> None:
        if self.fleet_hosts is not None:
            self.fleet_hosts.stop()
            self.fleet_hosts = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        self.stop_service()
        if self.blob_server is not None:
            self.blob_server.stop()
            self.blob_server = None
        if self.hub is not None:
            self.hub.close()
            self.hub = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------------

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def restart_service(self) -> None:
        """Kill-and-restart of the service part: a fresh runtime on the same database and ports."""
        self.stop_service()
        self.settings = self._settings()  # the API keeps its port
        self._start_service()

    def restart_hub(self) -> None:
        """Stop the hub (devices lose their sessions) and start it on the same ports and data."""
        assert self.hub is not None
        self.hub.close()
        self._start_hub()
        if self.fleet is not None:
            self.fleet.hub = self.hub

    # -- what to print -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        assert self.hub is not None
        info = json.loads((self.hub.server.config.data_dir / "hub.json").read_text())
        described: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "hub_mqtt": f"mqtts://localhost:{self.hub.server.mqtt_port}",
            "hub_https": f"https://localhost:{self.hub.server.https_port}",
            "hub_ca_cert": str(self.hub.server.ca_cert),
            "hub_service_connection_string": info["service_connection_string"],
            "hub_feed": str(self.hub.server.config.feed_path),
            "blob": self.blob_server.url if self.blob_server else "azurite",
            "service": dict(self.addresses) if self.service else None,
        }
        if self.fleet is not None:
            described["devices"] = {
                group: len(self.fleet.members(group))
                for group in sorted({i.group for i in self.fleet.identities.values()})
            }
            first = next(iter(sorted(self.fleet.identities)), None)
            if first is not None:
                described["device_connection_string_example"] = self.fleet.identities[
                    first
                ].connection_string
        return described


def _as_dict(addresses: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(addresses) and not isinstance(addresses, type):
        addresses = dataclasses.asdict(addresses)
    return {k: str(v) if isinstance(v, Path) else v for k, v in dict(addresses).items()}


def _port_of(address: Any) -> int | None:
    if not isinstance(address, str) or ":" not in address:
        return None
    tail = address.rsplit(":", 1)[1].split("/", 1)[0]
    return int(tail) if tail.isdigit() else None
