"""The hub's one configuration object, with the IoT Hub limits it enforces.

Built once at the entry point (CLI or test fixture), never at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from infra.hub._errors import HubConfigError

__all__ = ["HubConfig", "HubLimits"]

_HOSTNAME = re.compile(r"^(?=.{3,253}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Quotas of the real hub (reference §1.7) plus the mock's own protection against floods."""

    d2c_max_bytes: int = 256 * 1024
    c2d_max_bytes: int = 64 * 1024
    c2d_max_pending: int = 50
    method_payload_max_bytes: int = 128 * 1024
    method_timeout_min_s: int = 5
    method_timeout_max_s: int = 300
    twin_tags_max_bytes: int = 8 * 1024
    twin_desired_max_bytes: int = 32 * 1024
    twin_reported_max_bytes: int = 32 * 1024
    twin_max_depth: int = 10
    twin_key_max_bytes: int = 1024
    twin_string_max_bytes: int = 4 * 1024
    twin_ops_per_second_per_device: float = 10.0
    twin_ops_burst: int = 20
    max_subscriptions: int = 5
    max_connections: int = 20_000
    connect_timeout_s: float = 10.0
    tls_handshake_timeout_s: float = 10.0
    query_max_items: int = 1000

    def __post_init__(self) -> None:
        if not 0 < self.d2c_max_bytes <= 1024 * 1024:
            raise HubConfigError("d2c_max_bytes must be in (0, 1 MiB]")
        if not 0 < self.c2d_max_pending <= 1000:
            raise HubConfigError("c2d_max_pending must be in (0, 1000]")
        if not 0 < self.method_timeout_min_s <= self.method_timeout_max_s <= 3600:
            raise HubConfigError("method timeouts must satisfy 0 < min <= max <= 3600")
        if not 0 < self.max_connections <= 100_000:
            raise HubConfigError("max_connections must be in (0, 100000]")
        if self.twin_ops_per_second_per_device <= 0 or self.twin_ops_burst < 1:
            raise HubConfigError("twin rate limits must be positive")

    @property
    def max_packet_bytes(self) -> int:
        # Room for the topic (property bag) on top of the largest payload.
        return self.d2c_max_bytes + 16 * 1024


@dataclass(frozen=True, slots=True)
class HubConfig:
    data_dir: Path
    hostname: str = "tinyfleet-hub.local"
    bind_host: str = "127.0.0.1"
    mqtt_port: int = 8883
    https_port: int = 8443
    partition_count: int = 4
    limits: HubLimits = field(default_factory=HubLimits)

    def __post_init__(self) -> None:
        if not _HOSTNAME.match(self.hostname):
            raise HubConfigError(
                f"host name {self.hostname!r} must be a DNS name with a dot "
                "(the Azure C SDK splits it into hub name and suffix), e.g. tinyfleet-hub.local"
            )
        for name, port in (("mqtt_port", self.mqtt_port), ("https_port", self.https_port)):
            if not 0 <= port <= 65535:
                raise HubConfigError(f"{name} {port} is not a TCP port")
        if not 1 <= self.partition_count <= 32:
            raise HubConfigError("partition_count must be between 1 and 32 (as in Event Hubs)")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hub.sqlite"

    @property
    def feed_path(self) -> Path:
        return self.data_dir / "feed.sqlite"

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def trusted_cas_dir(self) -> Path:
        """Extra CA certificates (PEM) whose device certificates the hub accepts."""
        return self.data_dir / "trusted-cas"
