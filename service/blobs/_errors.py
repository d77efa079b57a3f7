"""Exceptions of the blob store port, split by who must act.

BlobError
├── BlobRequestError        the caller: what it asked for cannot be served
│   ├── BlobNotFound        no blob at that path
│   ├── InvalidBlobPath     empty, absolute, `.`/`..` segments, control characters, too long
│   └── RangeNotSatisfiable the byte range lies outside the blob
├── BlobConfigError         the operator: no signing key, bad connection string, refused credentials
└── BlobUnavailable         nobody yet: the backend failed or timed out; retry later

Adapters translate their backend's exceptions into this family with `raise ... from exc`.
"""

from __future__ import annotations

__all__ = [
    "BlobConfigError",
    "BlobError",
    "BlobNotFound",
    "BlobRequestError",
    "BlobUnavailable",
    "InvalidBlobPath",
    "RangeNotSatisfiable",
]


class BlobError(Exception):
    """Root of every error the blob store port raises."""


class BlobRequestError(BlobError):
    pass


class BlobNotFound(BlobRequestError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no blob at {path!r}")
        self.path = path


class InvalidBlobPath(BlobRequestError):
    pass


class RangeNotSatisfiable(BlobRequestError):
    def __init__(self, path: str, size: int) -> None:
        super().__init__(f"range outside {path!r} ({size} bytes)")
        self.path = path
        self.size = size


class BlobConfigError(BlobError):
    pass


class BlobUnavailable(BlobError):
    pass
