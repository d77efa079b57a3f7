"""Where published repositories live, and how devices fetch from them.

`RepositoryStore` is the port the repositories publish through: flat paths such as
`image/metadata/3.targets.json` or `image/targets/<sha256>.kws-v2.tflite`. A directory and an
in-memory store are here; the service adds a blob-store adapter. `StoreFetcher` is python-tuf's
fetcher port over any store, so a device (or a test) reads exactly what was published; over HTTP
devices use python-tuf's own `Urllib3Fetcher` against a server that serves the same paths.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface

from signing._errors import PublishError
from signing.files import atomic_write, fsync_dir

__all__ = [
    "DirectoryStore",
    "FileAnchor",
    "MemoryAnchor",
    "MemoryStore",
    "RepositoryStore",
    "RootAnchor",
    "StoreFetcher",
    "StoreNotFound",
]

CHUNK = 64 * 1024


class StoreNotFound(PublishError):
    """No object at that path."""


class RepositoryStore(Protocol):
    def put(self, path: str, chunks: Iterable[bytes]) -> None: ...

    def get(self, path: str) -> Iterator[bytes]:
        """Yield the object's bytes in bounded chunks; raise StoreNotFound when absent."""
        ...

    def exists(self, path: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...


def read_all(store: RepositoryStore, path: str) -> bytes:
    return b"".join(store.get(path))


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PublishError(f"invalid store path {path!r}")
    return path


class MemoryStore:
    """A store held in a dict; as real as the directory store, for tests and simulations."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, path: str, chunks: Iterable[bytes]) -> None:
        data = b"".join(chunks)
        with self._lock:
            self._objects[_check_path(path)] = data

    def get(self, path: str) -> Iterator[bytes]:
        with self._lock:
            data = self._objects.get(path)
        if data is None:
            raise StoreNotFound(path)
        return (data[i : i + CHUNK] for i in range(0, max(len(data), 1), CHUNK))

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._objects

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(p for p in self._objects if p.startswith(prefix))

    def replace_bytes(self, path: str, data: bytes) -> None:
        """Overwrite an object in place, as an attacker controlling the mirror would."""
        with self._lock:
            self._objects[path] = data

    def delete(self, path: str) -> None:
        with self._lock:
            self._objects.pop(path, None)


class DirectoryStore:
    """A store in a folder, written atomically; any static file server can serve it to devices."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, path: str) -> Path:
        return self.root / _check_path(path)

    def put(self, path: str, chunks: Iterable[bytes]) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            with open(tmp, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(target.parent)

    def get(self, path: str) -> Iterator[bytes]:
        target = self._path(path)
        if not target.is_file():
            raise StoreNotFound(path)
        return self._chunks(target)

    @staticmethod
    def _chunks(target: Path) -> Iterator[bytes]:
        with open(target, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list(self, prefix: str) -> list[str]:
        if not self.root.exists():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(p for p in found if p.startswith(prefix) and not p.endswith(".partial"))


class RootAnchor(Protocol):
    """Where the service keeps the last root it published, outside the store it publishes to."""

    def load(self) -> bytes | None: ...

    def save(self, data: bytes) -> None: ...


class MemoryAnchor:
    def __init__(self) -> None:
        self._data: bytes | None = None

    def load(self) -> bytes | None:
        return self._data

    def save(self, data: bytes) -> None:
        self._data = data


class FileAnchor:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> bytes | None:
        return self.path.read_bytes() if self.path.exists() else None

    def save(self, data: bytes) -> None:
        atomic_write(self.path, data, mode=0o600)


class StoreFetcher(FetcherInterface):
    """python-tuf fetcher over a store: `base_url` + path maps to the store path.

    A missing object answers 404, which python-tuf's root-chain walk needs to terminate.
    """

    def __init__(self, store: RepositoryStore, base_url: str = "store:///") -> None:
        self._store = store
        self._base = base_url

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(self._base):
            raise DownloadHTTPError(f"{url} is outside {self._base}", 404)
        try:
            return self._store.get(url[len(self._base) :])
        except StoreNotFound as exc:
            raise DownloadHTTPError(f"not found: {url}", 404) from exc
