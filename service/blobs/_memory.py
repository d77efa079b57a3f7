"""The in-memory blob store: a dict behind a lock, as strict as the real adapters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from service.blobs._errors import BlobNotFound
from service.blobs._port import BlobInfo, check_path, check_range, chunked
from service.blobs._urlsign import LocallySigned, UrlSigner

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore(LocallySigned):
    def __init__(
        self, signer: UrlSigner | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(signer, clock)
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, path: str, chunks: Iterable[bytes]) -> BlobInfo:
        check_path(path)
        # Collected aside and swapped in at the end, so readers never see a partial blob.
        data = b"".join(bytes(chunk) for chunk in chunks)
        with self._lock:
            self._blobs[path] = data
        return BlobInfo(path, len(data))

    def _data(self, path: str) -> bytes:
        check_path(path)
        with self._lock:
            data = self._blobs.get(path)
        if data is None:
            raise BlobNotFound(path)
        return data

    def get(self, path: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        data = self._data(path)
        start, end = check_range(path, len(data), offset, length)
        return chunked(data, start, end)

    def stat(self, path: str) -> BlobInfo:
        return BlobInfo(path, len(self._data(path)))

    def exists(self, path: str) -> bool:
        check_path(path)
        with self._lock:
            return path in self._blobs

    def delete(self, path: str) -> bool:
        check_path(path)
        with self._lock:
            return self._blobs.pop(path, None) is not None

    def list(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(p for p in self._blobs if p.startswith(prefix))

    def corrupt(self, path: str, data: bytes) -> None:
        """Replace a blob's bytes behind the service's back, as a compromised mirror would."""
        with self._lock:
            self._blobs[check_path(path)] = data
