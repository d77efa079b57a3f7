"""A blob store seen as `signing.store.RepositoryStore`, so the TUF repositories publish into it.

Repository paths (`image/metadata/3.targets.json`, `director/devices/<id>/metadata/...`) are
stored under `prefix`; a device then fetches them through `store.signed_prefix(prefix + "image/")`
and friends, appending the query to every request (the agent's `QueryFetcher`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from service.blobs._errors import BlobError, BlobNotFound
from service.blobs._port import BlobStore, check_prefix
from signing import PublishError
from signing.store import StoreNotFound

__all__ = ["BlobRepositoryStore"]


class BlobRepositoryStore:
    """Implements `signing.store.RepositoryStore`; blob errors become signing's `PublishError`."""

    def __init__(self, blobs: BlobStore, prefix: str = "") -> None:
        self.blobs = blobs
        self.prefix = check_prefix(prefix)

    def put(self, path: str, chunks: Iterable[bytes]) -> None:
        try:
            self.blobs.put(self.prefix + path, chunks)
        except BlobError as exc:
            raise PublishError(f"publishing {path}: {exc}") from exc

    def get(self, path: str) -> Iterator[bytes]:
        try:
            return self.blobs.get(self.prefix + path)
        except BlobNotFound as exc:
            raise StoreNotFound(path) from exc
        except BlobError as exc:
            raise PublishError(f"reading {path}: {exc}") from exc

    def exists(self, path: str) -> bool:
        try:
            return self.blobs.exists(self.prefix + path)
        except BlobError as exc:
            raise PublishError(f"checking {path}: {exc}") from exc

    def list(self, prefix: str) -> list[str]:
        try:
            found = self.blobs.list(self.prefix + prefix)
        except BlobError as exc:
            raise PublishError(f"listing {prefix}: {exc}") from exc
        return [p[len(self.prefix) :] for p in found]
