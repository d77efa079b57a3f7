"""The local blob server: `GET`/`HEAD /blobs/{path}?exp=...&sig=...` over any `BlobStore`.

Standard library `ThreadingHTTPServer` (see docs/decisions/0004-blob-store.md): one thread per
download, bytes streamed from the store in CHUNK pieces, so memory stays bounded per request.
Answers: 200 or 206 (`Content-Range`) with `Accept-Ranges: bytes`; 400 for a path that is not a
blob path (this also refuses traversal and folder listings); 403 for a missing, forged, misused or
expired signature; 404 for a signed path with no blob; 416 with `Content-Range: bytes */size` for
an unsatisfiable range; 405 for other methods. Multi-range or malformed `Range` headers are
ignored and the whole blob is sent, as RFC 9110 allows.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

from service.blobs._errors import (
    BlobError,
    BlobNotFound,
    BlobRequestError,
    RangeNotSatisfiable,
)
from service.blobs._port import BlobStore, check_path
from service.blobs._urlsign import SignatureRefused, UrlSigner

__all__ = ["ROUTE", "BlobServer", "parse_range"]

ROUTE = "/blobs/"
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The `[start, end)` one `Range` header asks for; None to send everything.

    Raises RangeNotSatisfiable when the range is well formed but lies outside the blob.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # several ranges, other units, or garbage: ignored
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable("", size)
        return max(0, size - count), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable("", size)
    end = size if last == "" else min(size, int(last) + 1)
    return start, end


class BlobServer:
    """Serves one store on `host:port` (0 picks a free port); `url` is its `/blobs/` base."""

    def __init__(
        self,
        key: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._verifier = UrlSigner(key, "http://verifier.invalid/")  # also checks the key length
        self._clock = clock
        self._store: BlobStore | None = None
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}{ROUTE}"

    def signer(self, public_url: str | None = None) -> UrlSigner:
        """A signer for URLs this server accepts; `public_url` when behind a proxy."""
        return UrlSigner(self._key, public_url or self.url)

    def start(self, store: BlobStore) -> BlobServer:
        self._store = store
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> BlobServer:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def _make_handler(server: BlobServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tinyfleet-blobs"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:
            pass  # the service logs; a device's every range request is not worth a line

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _refuse_method(self) -> None:
            self._status(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

        def _status(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
            body = f"{status.value} {status.phrase}\n".encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self, *, body: bool) -> None:
            store = server._store
            parts = urlsplit(self.path)
            if store is None or not parts.path.startswith(ROUTE):
                self._status(HTTPStatus.NOT_FOUND)
                return
            path = unquote(parts.path[len(ROUTE) :])
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            try:
                check_path(path)
                server._verifier.verify(path, params, int(server._clock()))
                size = store.stat(path).size
            except SignatureRefused:
                self._status(HTTPStatus.FORBIDDEN)
                return
            except BlobNotFound:
                self._status(HTTPStatus.NOT_FOUND)
                return
            except BlobRequestError:
                self._status(HTTPStatus.BAD_REQUEST)
                return
            except BlobError:
                self._status(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "5"})
                return
            try:
                wanted = parse_range(self.headers.get("Range"), size)
            except RangeNotSatisfiable:
                self._status(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"}
                )
                return
            start, end = wanted or (0, size)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if wanted else HTTPStatus.OK)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Cache-Control", "private, no-store")
            self.send_header("Content-Length", str(end - start))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if not body or end == start:
                return
            try:
                for chunk in store.get(path, start, end - start):
                    self.wfile.write(chunk)
            except (BlobError, OSError):
                self.close_connection = True  # headers are out: cut the body short

    return Handler
