"""The transport port between the agent and one core, and its adapters.

A transport moves whole messages (datagrams) of at most the profile's message size, in order;
it does not need to be reliable (the ICC link layer repairs loss). Adapters:

 * `SeqpacketTransport`: one end of `socket.socketpair(AF_UNIX, SOCK_SEQPACKET)`, the shape of
   Azure Sphere's `Application_Connect` socket. Lossless and in order; a blocking send is the
   back-pressure.
 * `MemoryTransport` (from `memory_pipe`): two in-process ends joined by a `FaultyChannel`
   per direction, thread-safe, for tests that run a core in a thread and inject faults.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from device_agent.intercore._errors import CoreUnavailableError
from device_agent.intercore._faults import FaultPlan, FaultyChannel

__all__ = ["CoreTransport", "MemoryTransport", "SeqpacketTransport", "memory_pipe"]


class CoreTransport(Protocol):
    """Moves whole messages to and from one core."""

    def send(self, data: bytes) -> None:
        """Send one message. Raises CoreUnavailableError when the peer is gone."""

    def recv(self, timeout: float) -> bytes | None:
        """One message, or None after `timeout` seconds. Raises CoreUnavailableError on EOF."""

    def close(self) -> None:
        """Release the transport; the peer sees EOF."""


class SeqpacketTransport:
    """A connected SOCK_SEQPACKET socket."""

    def __init__(self, sock: socket.socket, max_message_bytes: int) -> None:
        self._sock = sock
        self._max = max_message_bytes

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise CoreUnavailableError(f"cannot send to core: {exc.strerror or exc}") from exc

    def recv(self, timeout: float) -> bytes | None:
        try:
            readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
            if not readable:
                return None
            data = self._sock.recv(self._max + 1)
        except (OSError, ValueError) as exc:
            raise CoreUnavailableError(f"cannot receive from core: {exc}") from exc
        if not data:
            raise CoreUnavailableError("the core closed the link (process ended)")
        return data

    def close(self) -> None:
        self._sock.close()


class _Shared:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.lock = threading.Condition()
        self.clock = clock
        self.closed = False


class MemoryTransport:
    """One end of an in-memory pipe; see `memory_pipe`."""

    def __init__(self, shared: _Shared, outgoing: FaultyChannel, incoming: FaultyChannel) -> None:
        self._shared = shared
        self._out = outgoing
        self._in = incoming
        self._ready: list[bytes] = []

    @property
    def fault_counts(self) -> dict[str, int]:
        return dict(self._out.counts)

    def send(self, data: bytes) -> None:
        with self._shared.lock:
            if self._shared.closed:
                raise CoreUnavailableError("the in-memory link is closed")
            self._out.put(data, self._shared.clock())
            self._shared.lock.notify_all()

    def recv(self, timeout: float) -> bytes | None:
        shared = self._shared
        deadline = time.monotonic() + max(0.0, timeout)
        with shared.lock:
            while True:
                if not self._ready:
                    self._ready.extend(self._in.take(shared.clock()))
                if self._ready:
                    return self._ready.pop(0)
                if shared.closed:
                    raise CoreUnavailableError("the in-memory link is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                due = self._in.next_due()
                wait = remaining if due is None else min(remaining, max(0.0, due - shared.clock()))
                shared.lock.wait(max(wait, 0.0005) if due is not None else wait)

    def close(self) -> None:
        with self._shared.lock:
            self._shared.closed = True
            self._shared.lock.notify_all()


def memory_pipe(
    to_core: FaultPlan | None = None,
    to_host: FaultPlan | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[MemoryTransport, MemoryTransport]:
    """(host end, core end) of an in-memory link with the given faults per direction."""
    shared = _Shared(clock)
    down, up = FaultyChannel(to_core), FaultyChannel(to_host)
    return MemoryTransport(shared, down, up), MemoryTransport(shared, up, down)
