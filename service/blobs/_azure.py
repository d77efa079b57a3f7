"""Azure Blob Storage through `azure-storage-blob`, with SAS URLs; tested against Azurite.

`put` stages the chunks as blocks of at most BLOCK bytes and commits the block list at the end:
uncommitted blocks are invisible, so readers see the old blob or the whole new one, and at most
one block (and its copy) is held in memory. Reads stream `download_blob(...).chunks()` in
READ_CHUNK requests.

`signed_prefix` is a read-only *container* SAS: Azure scopes SAS tokens to a blob, a container,
or (only on accounts with a hierarchical namespace) a directory, so the grant covers the whole
container. Give the repositories a container of their own (docs/decisions/0004-blob-store.md).
For the same reason `signed_prefixes` (one device's folders) is that container SAS too: on Azure a
device's grant also reads the other devices' director metadata (signed, and naming its device,
so it is refused if replayed, but readable).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import quote

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

from service.blobs._errors import (
    BlobConfigError,
    BlobError,
    BlobNotFound,
    BlobUnavailable,
    InvalidBlobPath,
    RangeNotSatisfiable,
)
from service.blobs._port import BlobInfo, SignedPrefix, check_path, check_prefix, check_range

__all__ = ["BLOCK", "AzureBlobStore"]

BLOCK = 4 * 1024 * 1024  # staged upload blocks (Azure allows 50,000 per blob: 195 GiB)
READ_CHUNK = 1024 * 1024  # download requests; the SDK's copies make the peak about 10x this
MAX_EXPIRES_IN = 7 * 24 * 3600
_CLOCK_SKEW = timedelta(minutes=5)  # SAS start time, so a device whose clock runs late is served


def _translate(exc: Exception, path: str) -> NoReturn:
    if isinstance(exc, BlobError):
        raise exc
    if isinstance(exc, ResourceNotFoundError):
        raise BlobNotFound(path) from exc
    if isinstance(exc, ClientAuthenticationError):
        raise BlobConfigError(f"Azure refused the storage credentials: {exc.message}") from exc
    if isinstance(exc, HttpResponseError) and exc.status_code == 416:
        raise RangeNotSatisfiable(path, -1) from exc
    if isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
        raise BlobConfigError(f"Azure refused access to {path!r}: {exc.message}") from exc
    if isinstance(exc, AzureError):
        raise BlobUnavailable(f"Azure Blob Storage failed on {path!r}: {exc}") from exc
    raise exc


class AzureBlobStore:
    def __init__(self, service: BlobServiceClient, container: str, *, create: bool = True) -> None:
        self._service = service
        self._container = service.get_container_client(container)
        self.container = container
        credential = service.credential
        self._account_key: str | None = getattr(credential, "account_key", None)
        if create:
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            except Exception as exc:
                _translate(exc, container)

    @classmethod
    def from_connection_string(
        cls, connection_string: str, container: str, *, create: bool = True
    ) -> AzureBlobStore:
        try:
            service = BlobServiceClient.from_connection_string(
                connection_string,
                max_single_get_size=READ_CHUNK,
                max_chunk_get_size=READ_CHUNK,
                connection_timeout=10,
                read_timeout=60,
            )
        except ValueError as exc:
            raise BlobConfigError(f"bad Azure Storage connection string: {exc}") from exc
        return cls(service, container, create=create)

    def put(self, path: str, chunks: Iterable[bytes]) -> BlobInfo:
        blob = self._container.get_blob_client(check_path(path))
        stamp = uuid.uuid4().hex[:16]
        blocks: list[BlobBlock] = []
        pending = bytearray()
        size = 0
        try:

            def stage() -> None:
                block_id = f"{stamp}-{len(blocks):08d}"
                blob.stage_block(block_id, bytes(pending), length=len(pending))
                blocks.append(BlobBlock(block_id=block_id))
                pending.clear()

            for chunk in chunks:
                size += len(chunk)
                pending += chunk
                while len(pending) >= BLOCK:
                    rest = pending[BLOCK:]
                    del pending[BLOCK:]
                    stage()
                    pending += rest
            if pending:
                stage()
            blob.commit_block_list(blocks)
        except Exception as exc:
            _translate(exc, path)
        return BlobInfo(path, size)

    def get(self, path: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        blob = self._container.get_blob_client(check_path(path))
        try:
            if offset == 0 and length is None:
                download = blob.download_blob()
            else:
                size = int(blob.get_blob_properties().size)
                start, end = check_range(path, size, offset, length)
                if start == end:
                    return iter(())
                download = blob.download_blob(offset=start, length=end - start)
        except Exception as exc:
            _translate(exc, path)
        return _stream(download.chunks(), path)

    def stat(self, path: str) -> BlobInfo:
        blob = self._container.get_blob_client(check_path(path))
        try:
            return BlobInfo(path, int(blob.get_blob_properties().size))
        except Exception as exc:
            _translate(exc, path)

    def exists(self, path: str) -> bool:
        try:
            return bool(self._container.get_blob_client(check_path(path)).exists())
        except Exception as exc:
            _translate(exc, path)

    def delete(self, path: str) -> bool:
        try:
            self._container.get_blob_client(check_path(path)).delete_blob()
        except ResourceNotFoundError:
            return False
        except Exception as exc:
            _translate(exc, path)
        return True

    def list(self, prefix: str = "") -> list[str]:
        try:
            return sorted(b.name for b in self._container.list_blobs(name_starts_with=prefix))
        except Exception as exc:
            _translate(exc, prefix)

    def _window(self, expires_in: int) -> tuple[datetime, datetime]:
        if self._account_key is None:
            raise BlobConfigError("SAS URLs need the storage account key in the connection string")
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise BlobConfigError(f"expires_in must be 1..{MAX_EXPIRES_IN} seconds")
        now = datetime.now(UTC)
        return now - _CLOCK_SKEW, now + timedelta(seconds=expires_in)

    def signed_url(self, path: str, expires_in: int) -> str:
        start, expiry = self._window(expires_in)
        sas = generate_blob_sas(
            account_name=str(self._service.account_name),
            container_name=self.container,
            blob_name=check_path(path),
            account_key=self._account_key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=expiry,
        )
        return f"{self._container.get_blob_client(path).url}?{sas}"

    def signed_prefix(self, prefix: str, expires_in: int) -> SignedPrefix:
        start, expiry = self._window(expires_in)
        sas = generate_container_sas(
            account_name=str(self._service.account_name),
            container_name=self.container,
            account_key=self._account_key,
            permission=ContainerSasPermissions(read=True),
            start=start,
            expiry=expiry,
        )
        return SignedPrefix(f"{self._container.url}/{quote(check_prefix(prefix))}", sas)

    def signed_prefixes(self, base: str, prefixes: Sequence[str], expires_in: int) -> SignedPrefix:
        """The container SAS over `base` (Azure has no grant of several folders)."""
        if not prefixes or any(not check_prefix(p).startswith(base) for p in prefixes):
            raise InvalidBlobPath(f"prefixes {prefixes!r} must be folders under {base!r}")
        return self.signed_prefix(base, expires_in)


def _stream(chunks: Iterator[Any], path: str) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield bytes(chunk)
    except Exception as exc:
        _translate(exc, path)
