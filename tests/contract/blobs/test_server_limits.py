"""The local blob server against clients that would pin it down: slow, idle, or too many.

Each test waits for a condition under a generous deadline; none asserts how long anything took.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.blobs import BlobConfigError, BlobServer, FilesystemBlobStore
from tests.contract.blobs.conftest import KEY

DEADLINE_S = 60.0


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[BlobServer, FilesystemBlobStore]]:
    with BlobServer(KEY, timeout=0.5, max_connections=2) as server:
        store = FilesystemBlobStore(tmp_path / "blobs", server.signer())
        server.start(store)
        store.put("a/blob", [b"bytes"])
        yield server, store


def _connect(server: BlobServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


def _closed_by_peer(sock: socket.socket, wait_s: float) -> bool:
    """True when the server has closed the connection (EOF or reset)."""
    readable, _, _ = select.select([sock], [], [], wait_s)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except OSError:
        return True


def _get(server: BlobServer, store: FilesystemBlobStore) -> bytes:
    parts = urlsplit(store.signed_url("a/blob", 60))
    with _connect(server) as sock:
        head = f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "opening",
    [b"", b"G", b"GET /blobs/a/blob HTTP/1.1\r\nHost: x\r\n"],
    ids=["silent", "part-of-the-request-line", "headers-never-finished"],
)
def test_a_slowloris_is_dropped_however_slowly_it_trickles(
    small: tuple[BlobServer, FilesystemBlobStore], opening: bytes
) -> None:
    """One byte every 50 ms keeps any per-read timeout (0.5 s here) from ever firing; only a
    deadline for the whole head ends it."""
    server, store = small
    with _connect(server) as sock:
        sock.sendall(opening)
        sock.sendall(b"X-Slow: ")
        deadline = time.monotonic() + DEADLINE_S
        dropped = False
        while not dropped and time.monotonic() < deadline:
            try:
                sock.sendall(b"a")
            except (ConnectionError, OSError):
                dropped = True
                break
            dropped = _closed_by_peer(sock, 0.05)
        assert dropped, "the slow client was never dropped"
    _wait(lambda: server.connections[0] == 0, "the slot is freed")
    assert b"200 OK" in _get(server, store)


def test_an_idle_keep_alive_connection_is_closed(
    small: tuple[BlobServer, FilesystemBlobStore],
) -> None:
    server, store = small
    parts = urlsplit(store.signed_url("a/blob", 60))
    with _connect(server) as sock:
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        _wait(lambda: _has_response(sock), "the first answer")
        _wait(lambda: _closed_by_peer(sock, 0.05), "the idle connection is closed")


def _has_response(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0.05)[0]:
        return False
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return True


def test_connections_beyond_the_bound_are_refused_without_a_thread(tmp_path: Path) -> None:
    # A long timeout: the held connections must not time out while the test runs.
    with BlobServer(KEY, timeout=DEADLINE_S, max_connections=2) as server:
        store = FilesystemBlobStore(tmp_path / "blobs", server.signer())
        server.start(store)
        store.put("a/blob", [b"bytes"])
        _fill_and_overflow(server, store)


def _fill_and_overflow(server: BlobServer, store: FilesystemBlobStore) -> None:
    held = [_connect(server) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"GET ")  # in the middle of a head: each holds a slot
        _wait(lambda: server.connections[0] == 2, "both slots are taken")
        for _ in range(10):
            with _connect(server) as extra:
                answer = _read_all(extra)
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        assert server.connections[1:] == (2, 10)  # never more than 2 served at once
    finally:
        for sock in held:
            sock.close()
    _wait(lambda: server.connections[0] == 0, "the slots are freed")
    assert b"200 OK" in _get(server, store)


def test_a_port_held_by_someone_else_is_a_config_error() -> None:
    with BlobServer(KEY) as first, pytest.raises(BlobConfigError, match="cannot listen on"):
        BlobServer(KEY, port=first.port)
