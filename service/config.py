"""The service's configuration: one typed object, read from the environment once, at start.

Environment variables use the `TINYFLEET_` prefix (`TINYFLEET_DATA_DIR`, `TINYFLEET_MODE`,
`TINYFLEET_KEY_PASSPHRASE`). Outside dev mode a passphrase must be given and may not be the dev
default.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from signing.keys import DEV_PASSPHRASE

__all__ = ["Mode", "Settings"]


class Mode(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TINYFLEET_", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path(".tinyfleet"), description="keys, repositories, state")
    mode: Mode = Mode.DEV
    key_passphrase: SecretStr | None = None
    # Re-sign metadata that expires within this window when `repo refresh` runs.
    refresh_within: timedelta = Field(
        default=timedelta(hours=12), ge=timedelta(minutes=1), le=timedelta(days=30)
    )
    # Production: how many offline root keys, and how many must sign a root.
    root_keys: int = Field(default=3, ge=1, le=16)
    root_threshold: int = Field(default=2, ge=1, le=16)

    # The service's adapters (issue 5/6). Empty means the embedded default under `data_dir`.
    db_url: str = Field(default="", description="SQLAlchemy URL; default sqlite in data_dir")
    blob_url: str = Field(
        default="",
        description="blob store: empty or file://DIR (filesystem), or azure://CONTAINER "
        "with blob_connection_string",
    )
    blob_connection_string: SecretStr | None = None  # Azure Storage / Azurite
    blob_public_url: str = Field(
        default="", description="base URL devices fetch blobs from (filesystem store's server)"
    )
    blob_signing_key: SecretStr | None = None  # HMAC key of filesystem signed URLs
    # Serve the filesystem store over HTTP from the service; off when another process serves it
    # at blob_public_url with the same signing key (`tinyfleet up` keeps it up across restarts).
    blob_serve: bool = True
    # The service's blob server. Port 0: the first start picks a free port and keeps it in
    # DATA/blob-port, so URLs already offered to devices stay valid across restarts.
    blob_port: int = Field(default=0, ge=0, le=65535)
    blob_timeout: timedelta = Field(
        default=timedelta(seconds=10), ge=timedelta(milliseconds=50), le=timedelta(minutes=5)
    )
    blob_max_connections: int = Field(default=64, ge=1, le=4096)
    blob_url_ttl: timedelta = Field(
        default=timedelta(hours=24), ge=timedelta(minutes=1), le=timedelta(days=7)
    )
    hub_connection_string: SecretStr | None = None  # service policy connection string
    telemetry_source: str = Field(
        default="",
        description="feed to ingest: empty (none), mockhub:PATH (the mock hub's feed file) or "
        "eventhub (with eventhub_connection_string)",
    )
    eventhub_connection_string: SecretStr | None = None
    eventhub_consumer_group: str = "$Default"
    # Several service processes ingest one feed by sharing its partitions through leases in the
    # database (docs/operations.md); off, this process reads every partition of the feed.
    telemetry_leases: bool = False
    # A dead process's partitions are taken over this long after its last renewal; leases are
    # renewed every third of it, between batches (so it must well exceed one batch's commit).
    telemetry_lease_ttl: timedelta = Field(
        default=timedelta(seconds=30), ge=timedelta(seconds=5), le=timedelta(hours=1)
    )
    telemetry_worker_id: str = Field(
        default="",
        max_length=200,
        description="this process's name in the leases; empty: host-pid-random, new each start",
    )
    # Where the audit chain's head is anchored (default DATA/audit-anchor); best kept where the
    # database's writers cannot write.
    audit_anchor: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    # The largest JSON request body the API reads (413 past it); uploads have the release budget.
    api_max_json_body: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    engine_interval: timedelta = Field(
        default=timedelta(seconds=2), ge=timedelta(milliseconds=50), le=timedelta(minutes=5)
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.mode is Mode.PRODUCTION:
            secret = self.key_passphrase.get_secret_value() if self.key_passphrase else None
            if secret == DEV_PASSPHRASE:
                raise ValueError("the dev passphrase is refused in production mode")
            if self.root_threshold > self.root_keys:
                raise ValueError("root_threshold cannot exceed root_keys")
        return self

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def repo_dir(self) -> Path:
        return self.data_dir / "repo"

    @property
    def devices_dir(self) -> Path:
        return self.data_dir / "devices"

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'tinyfleet.db'}"

    @property
    def audit_anchor_path(self) -> Path:
        return self.audit_anchor or self.data_dir / "audit-anchor"

    @property
    def blob_dir(self) -> Path:
        """The filesystem blob store's folder (`file://DIR`, default DATA/blobs)."""
        if self.blob_url.startswith("file://"):
            return Path(self.blob_url.removeprefix("file://"))
        return self.data_dir / "blobs"

    @property
    def dev_mode(self) -> bool:
        return self.mode is Mode.DEV
