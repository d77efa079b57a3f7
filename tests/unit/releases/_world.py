"""A release world on in-memory ports: MemoryStorage, MemoryBlobStore, a real dev-mode keystore."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.blobs import BlobStore, MemoryBlobStore
from service.config import Settings
from service.releases import ReleaseService, repository_store
from service.storage import MemoryStorage, Storage
from service.trust import TrustService
from signing.keys import DEV_PASSPHRASE, KeyScheme
from tests.unit.releases._models import prebuilt

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @classmethod
    def from_wall(cls) -> Clock:
        """A clock that starts at the wall clock's now, for worlds where a part reads the wall
        clock itself (python-tuf checks expiry against the device's real time)."""
        return cls(datetime.now(UTC).replace(microsecond=0))


@dataclass
class ReleaseWorld:
    tmp: Path
    blobs: BlobStore = field(default_factory=MemoryBlobStore)
    repo_blobs: BlobStore | None = None
    storage: Storage = field(default_factory=MemoryStorage)
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.settings = Settings(data_dir=self.tmp / "svc")
        self.trust = TrustService(
            self.settings,
            lambda: DEV_PASSPHRASE,
            store=repository_store(self.repo_blobs or self.blobs),
        )
        self.trust.init_keys(KeyScheme.ED25519)
        self.trust.init_repos(self.clock())
        self.service = self.new_service()

    def new_service(self) -> ReleaseService:
        """Another service instance over the same ports, as after a restart."""
        self.service = ReleaseService(self.storage, self.blobs, self.trust, self.clock)
        return self.service


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def upload(
    service: ReleaseService, release_id: str, core: str, name: str, actor: str = "alice"
) -> Any:
    data, sidecar = prebuilt(name)
    return service.add_artifact(release_id, core, chunks(data), sidecar, actor)
