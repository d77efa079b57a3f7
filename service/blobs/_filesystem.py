"""The filesystem blob store (the default): one file per blob under a root folder.

Writes go to a hidden temporary file beside the target, are fsynced, then renamed over it, so a
crash leaves the old blob or the new one; temporary names (`.~...partial`) are never listed and
cannot be asked for. Paths are resolved and must stay under the root (no traversal, no symlinks
out). Served to devices by `BlobServer`.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from service.blobs._errors import BlobNotFound, BlobUnavailable, InvalidBlobPath
from service.blobs._port import CHUNK, BlobInfo, check_path, check_range
from service.blobs._urlsign import LocallySigned, UrlSigner

__all__ = ["FilesystemBlobStore"]

_TEMP = ".~"


class FilesystemBlobStore(LocallySigned):
    def __init__(
        self,
        root: Path,
        signer: UrlSigner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(signer, clock)
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._real_root = root.resolve(strict=True)
        except OSError as exc:
            raise BlobUnavailable(f"blob root {root} is not usable: {exc}") from exc

    def _file(self, path: str) -> Path:
        check_path(path)
        if any(part.startswith(_TEMP) for part in path.split("/")):
            raise InvalidBlobPath(f"{path!r}: names starting with {_TEMP!r} are reserved")
        target = self._real_root / path
        if not target.resolve().is_relative_to(self._real_root):
            raise InvalidBlobPath(f"{path!r} leaves the blob root")
        return target

    def put(self, path: str, chunks: Iterable[bytes]) -> BlobInfo:
        target = self._file(path)
        tmp = target.with_name(f"{_TEMP}{target.name}.{uuid.uuid4().hex}.partial")
        size = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if target.is_dir():
                raise InvalidBlobPath(f"{path!r} is a folder of other blobs")
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except (FileExistsError, NotADirectoryError) as exc:
            raise InvalidBlobPath(f"{path!r} runs through an existing blob") from exc
        except OSError as exc:
            raise BlobUnavailable(f"writing {path!r}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):  # gone after the rename, or never created
                tmp.unlink()
        return BlobInfo(path, size)

    def _open(self, path: str) -> tuple[BinaryIO, int]:
        target = self._file(path)
        try:
            handle = open(target, "rb")  # noqa: SIM115 (closed by the reader generator)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise BlobNotFound(path) from exc
        except OSError as exc:
            raise BlobUnavailable(f"reading {path!r}: {exc}") from exc
        return handle, os.fstat(handle.fileno()).st_size

    def get(self, path: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        handle, size = self._open(path)
        try:
            start, end = check_range(path, size, offset, length)
            handle.seek(start)
        except BaseException:
            handle.close()
            raise
        return _read(handle, end - start)

    def stat(self, path: str) -> BlobInfo:
        handle, size = self._open(path)
        handle.close()
        return BlobInfo(path, size)

    def exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def delete(self, path: str) -> bool:
        target = self._file(path)
        try:
            target.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        except OSError as exc:
            raise BlobUnavailable(f"deleting {path!r}: {exc}") from exc
        return True

    def list(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        for folder, dirs, files in os.walk(self._real_root):
            dirs[:] = [d for d in dirs if not d.startswith(_TEMP)]
            base = Path(folder).relative_to(self._real_root).as_posix()
            for name in files:
                if name.startswith(_TEMP):
                    continue
                path = name if base == "." else f"{base}/{name}"
                if path.startswith(prefix):
                    found.append(path)
        return sorted(found)


def _read(handle: BinaryIO, remaining: int) -> Iterator[bytes]:
    with handle:
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
