"""The local blob server: `GET`/`HEAD /blobs/{path}?exp=...&sig=...` over any `BlobStore`.

Standard library `ThreadingHTTPServer` (see docs/decisions/0004-blob-store.md): one thread per
connection, bytes streamed from the store in CHUNK pieces, so memory stays bounded per request.
Hostile or broken clients cannot pin it down:
- at most `max_connections` connections are served at once; one more is answered `503` with
  `Retry-After` and closed at once, without a thread;
- a request head (request line and headers) must arrive within `timeout` seconds of the server
  starting to wait for it, however slowly its bytes trickle in (a per-read timeout would never
  end a client that sends one byte a second), and an idle keep-alive connection is closed after
  the same time; each body chunk written must be taken by the client within `timeout`.
Answers: 200 or 206 (`Content-Range`) with `Accept-Ranges: bytes`; 400 for a path that is not a
blob path (this also refuses traversal and folder listings); 403 for a missing, forged, misused or
expired signature; 404 for a signed path with no blob; 416 with `Content-Range: bytes */size` for
an unsatisfiable range; 405 for other methods. Multi-range or malformed `Range` headers are
ignored and the whole blob is sent, as RFC 9110 allows.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from service.blobs._errors import (
    BlobConfigError,
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
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 64
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 24\r\nConnection: close\r\n\r\n503 Service Unavailable\n"
)


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


class _DeadlineReader(io.RawIOBase):
    """A socket's read side under one deadline for a whole request head, not one per read."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None  # time.monotonic() value; None: the socket's timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request head did not arrive in time")
            self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but never more than `max_connections` of them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_port = False  # a second server on the same port must fail, not share it

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int
    ) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._count = threading.Lock()
        self.active = 0
        self.peak = 0
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with self._count:
                self.refused += 1
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count:
            self.active -= 1
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that vanished mid-request is not the operator's problem


class BlobServer:
    """Serves one store on `host:port` (0 picks a free port); `url` is its `/blobs/` base.

    Raises BlobConfigError when the port cannot be bound (e.g. another process holds it).
    """

    def __init__(
        self,
        key: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if timeout <= 0 or max_connections < 1:
            raise BlobConfigError("the blob server needs timeout > 0 and max_connections >= 1")
        self._key = key
        self._verifier = UrlSigner(key, "http://verifier.invalid/")  # also checks the key length
        self._clock = clock
        self.timeout = timeout
        self.max_connections = max_connections
        self._store: BlobStore | None = None
        try:
            self._httpd = _BoundedServer((host, port), _make_handler(self), max_connections)
        except OSError as exc:
            raise BlobConfigError(f"the blob server cannot listen on {host}:{port}: {exc}") from exc
        self._thread: threading.Thread | None = None
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}{ROUTE}"

    @property
    def connections(self) -> tuple[int, int, int]:
        """(connections served now, the most served at once, connections refused as busy)."""
        return self._httpd.active, self._httpd.peak, self._httpd.refused

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

        def setup(self) -> None:
            super().setup()
            self._reader = _DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self._reader)

        def handle_one_request(self) -> None:
            # The whole head must arrive by the deadline; an idle keep-alive connection waits
            # for its next request under the same rule, so it is closed after `timeout` too.
            self._reader.deadline = time.monotonic() + server.timeout
            super().handle_one_request()

        def parse_request(self) -> bool:
            ok = super().parse_request()
            self._reader.deadline = None
            self.connection.settimeout(server.timeout)  # each write must be taken by then
            return ok

        def log_message(self, format: str, *args: object) -> None:
            pass  # the service logs; a device's every range request is not worth a line

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _refuse_method(self) -> None:
            self.close_connection = True  # its body (if any) is never read
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
