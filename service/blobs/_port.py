"""The blob store port: what the service asks of any object store, and the rules all adapters share.

Paths are flat, `/`-separated keys such as `image/targets/<sha256>.kws.tflite`. Every adapter
checks them with `check_path` before touching its backend, so a path that would escape a folder,
or that two backends would spell differently, is refused everywhere the same way.

Invariants (checked by `tests/contract/blobs/`, for every adapter):
- `put` consumes its chunks one at a time and never holds the whole blob; a reader sees either
  the previous blob or the complete new one, never a prefix (atomic replace).
- `get(path, offset, length)` yields the bytes `[offset, offset + length)` in bounded chunks;
  `offset` beyond the end raises `RangeNotSatisfiable`; a `length` running past the end is cut.
- Every failure is a `BlobError` (see `_errors.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.blobs._errors import InvalidBlobPath, RangeNotSatisfiable

__all__ = [
    "CHUNK",
    "MAX_PATH",
    "BlobInfo",
    "BlobStore",
    "SignedPrefix",
    "check_path",
    "check_prefix",
    "check_range",
    "chunked",
]

CHUNK = 64 * 1024
MAX_PATH = 1024  # Azure's blob name limit; we keep every backend to it


@dataclass(frozen=True)
class BlobInfo:
    path: str
    size: int


@dataclass(frozen=True)
class SignedPrefix:
    """Read access to every blob under a prefix: `base_url + name + "?" + query`.

    This is what python-tuf needs: it joins a base URL and a file name itself, so the signature
    must travel as a query string valid for the whole prefix (the agent's `QueryFetcher` appends
    `repository.query` from the twin to every request).
    """

    base_url: str
    query: str

    def url(self, name: str) -> str:
        return f"{self.base_url}{name}?{self.query}"


class BlobStore(Protocol):
    def put(self, path: str, chunks: Iterable[bytes]) -> BlobInfo:
        """Store the chunks under `path`, replacing any blob there atomically."""
        ...

    def get(self, path: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The blob's bytes from `offset`, at most `length` of them, in chunks of at most CHUNK.

        Raises BlobNotFound and RangeNotSatisfiable before the first chunk is yielded.
        """
        ...

    def stat(self, path: str) -> BlobInfo:
        """Raises BlobNotFound."""
        ...

    def exists(self, path: str) -> bool: ...

    def delete(self, path: str) -> bool:
        """True when a blob was removed, False when there was none."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every path that starts with `prefix`, sorted."""
        ...

    def signed_url(self, path: str, expires_in: int) -> str:
        """A URL anyone may GET (with Range) or HEAD for `expires_in` seconds."""
        ...

    def signed_prefix(self, prefix: str, expires_in: int) -> SignedPrefix:
        """Read access to every blob under `prefix` (a folder, ending in `/`)."""
        ...

    def signed_prefixes(self, base: str, prefixes: Sequence[str], expires_in: int) -> SignedPrefix:
        """Read access to the blobs under any of `prefixes` (folders under the folder `base`),
        and nothing else under `base`; the URL's base is `base`. Raises InvalidBlobPath for a
        prefix outside `base`. (Azure cannot: it grants its whole container, see `_azure`.)"""
        ...


def check_path(path: str) -> str:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH:
        raise InvalidBlobPath(f"blob path must be 1..{MAX_PATH} characters")
    if path.startswith("/") or "\\" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise InvalidBlobPath(f"blob path {path!r} is absolute or has forbidden characters")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidBlobPath(f"blob path {path!r} has an empty, '.' or '..' segment")
    return path


def check_prefix(prefix: str) -> str:
    """A folder prefix: empty (everything) or a valid path ending in `/`."""
    if prefix:
        if not prefix.endswith("/"):
            raise InvalidBlobPath(f"prefix {prefix!r} must be a folder ending in '/'")
        check_path(prefix[:-1])
    return prefix


def check_range(path: str, size: int, offset: int, length: int | None) -> tuple[int, int]:
    """The `[start, end)` that `get(path, offset, length)` covers on a blob of `size` bytes."""
    if offset < 0 or (length is not None and length < 0):
        raise RangeNotSatisfiable(path, size)
    if offset > size or (offset == size and size > 0):
        raise RangeNotSatisfiable(path, size)
    end = size if length is None else min(size, offset + length)
    return offset, end


def chunked(data: bytes, start: int, end: int) -> Iterator[bytes]:
    for at in range(start, end, CHUNK):
        yield data[at : min(at + CHUNK, end)]
