"""Where the agent reads target bytes: a small port, with HTTP Range and in-memory adapters.

`resumable(...)` turns any source into one stream of chunks that survives dropped connections:
it re-opens at the byte offset it reached (an HTTP Range request) until the signed length has
arrived or the retries are spent. Bytes are yielded as they come; nothing is buffered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

import urllib3

from signing.store import RepositoryStore, StoreNotFound

__all__ = ["HttpTargetSource", "SourceError", "StoreTargetSource", "TargetSource", "resumable"]

CHUNK = 16 * 1024


class SourceError(RuntimeError):
    """Target bytes could not be read; `transient` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class TargetSource(Protocol):
    def open(self, url_path: str, offset: int) -> Iterator[bytes]:
        """Yield the target's bytes from `offset`; raise SourceError on any failure."""
        ...


class HttpTargetSource:
    def __init__(
        self, base_url: str, query: str = "", *, ca_file: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self._base = base_url
        self._query = f"?{query}" if query else ""
        self._http = urllib3.PoolManager(
            ca_certs=ca_file,
            cert_reqs="CERT_REQUIRED" if ca_file else None,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=False,
        )

    def open(self, url_path: str, offset: int) -> Iterator[bytes]:
        url = f"{self._base}{url_path}{self._query}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self._http.request("GET", url, headers=headers, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise SourceError(f"GET {url_path}: {exc}", transient=True) from exc
        if response.status == 404:
            response.release_conn()
            raise SourceError(f"GET {url_path}: not found", transient=False)
        expected = 206 if offset else 200
        if response.status != expected:
            response.release_conn()
            raise SourceError(
                f"GET {url_path}: HTTP {response.status} (wanted {expected})",
                transient=response.status >= 500,
            )
        return self._stream(response, url_path)

    @staticmethod
    def _stream(response: urllib3.BaseHTTPResponse, url_path: str) -> Iterator[bytes]:
        try:
            yield from response.stream(CHUNK)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceError(f"reading {url_path}: {exc}", transient=True) from exc
        finally:
            response.release_conn()


class StoreTargetSource:
    """Targets straight from a repository store (simulations, tests, sideloading)."""

    def __init__(self, store: RepositoryStore, prefix: str = "image/targets/") -> None:
        self._store, self._prefix = store, prefix

    def open(self, url_path: str, offset: int) -> Iterator[bytes]:
        try:
            chunks = self._store.get(self._prefix + url_path)
        except StoreNotFound as exc:
            raise SourceError(f"{url_path}: not found", transient=False) from exc
        return _skip(chunks, offset)


def _skip(chunks: Iterator[bytes], offset: int) -> Iterator[bytes]:
    for chunk in chunks:
        if offset >= len(chunk):
            offset -= len(chunk)
            continue
        yield chunk[offset:]
        offset = 0


def resumable(
    source: TargetSource,
    url_path: str,
    length: int,
    *,
    retries: int = 5,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    on_resume: Callable[[int], None] = lambda offset: None,
) -> Iterator[bytes]:
    """Yield up to `length` bytes, resuming at the reached offset after a transient failure.

    It never yields more than `length` bytes; the verifier downstream refuses a source that
    tries to send more (an endless-data attack) and a hash that does not match.
    """
    offset, failures = 0, 0
    while offset < length:
        try:
            for chunk in source.open(url_path, offset):
                if not chunk:
                    continue
                room = length - offset + 1  # one byte more than signed, so the verifier sees it
                chunk = chunk[:room]
                offset += len(chunk)
                yield chunk
                if offset > length:
                    return
            if offset < length:
                raise SourceError(
                    f"{url_path}: stream ended at {offset} of {length}", transient=True
                )
        except SourceError as exc:
            failures += 1
            if not exc.transient or failures > retries:
                raise
            on_resume(offset)
            sleep(backoff_s * 2 ** (failures - 1))
