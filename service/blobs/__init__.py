"""The blob store port and its adapters: memory, filesystem (served by `BlobServer` with signed,
expiring URLs) and Azure Blob Storage (SAS URLs). See `_port.py` for the contract and
docs/decisions/0004-blob-store.md for the choices.
"""

from __future__ import annotations

from service.blobs._azure import AzureBlobStore
from service.blobs._errors import (
    BlobConfigError,
    BlobError,
    BlobNotFound,
    BlobRequestError,
    BlobUnavailable,
    InvalidBlobPath,
    RangeNotSatisfiable,
)
from service.blobs._filesystem import FilesystemBlobStore
from service.blobs._memory import MemoryBlobStore
from service.blobs._port import CHUNK, BlobInfo, BlobStore, SignedPrefix
from service.blobs._repository import BlobRepositoryStore
from service.blobs._server import BlobServer
from service.blobs._urlsign import SignatureRefused, UrlSigner

__all__ = [
    "CHUNK",
    "AzureBlobStore",
    "BlobConfigError",
    "BlobError",
    "BlobInfo",
    "BlobNotFound",
    "BlobRepositoryStore",
    "BlobRequestError",
    "BlobServer",
    "BlobStore",
    "BlobUnavailable",
    "FilesystemBlobStore",
    "InvalidBlobPath",
    "MemoryBlobStore",
    "RangeNotSatisfiable",
    "SignatureRefused",
    "SignedPrefix",
    "UrlSigner",
]
