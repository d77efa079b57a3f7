"""The transport port between the agent and one core, and its adapters.

A transport moves whole messages (datagrams) of at most the profile's message size, in order;
it does not need to be reliable (the ICC link layer repairs loss). Adapters:

 * `SeqpacketTransport`: one end of `socket.socketpair(AF_UNIX, SOCK_SEQPACKET)`, the shape of
   Azure Sphere's `Application_Connect` socket. Lossless and in order; a blocking send is the
   back-pressure.
 * `MemoryTransport` (from `memory_pipe`): two in-process ends joined by a `FaultyChannel`
   per direction, thread-safe, for tests that run a core in a thread and inject faults.
 * `DatagramTransport` (from `datagram_pipe`): the agent's end of a lossless in-process pipe
   whose other end (`DatagramPort`) is driven without blocking by a reactor that serves many
   cores in one thread (`firmware.host`). It keeps the socket's semantics: each direction holds
   at most `capacity` messages (the agent's `send` blocks while the core's side is full; the
   core's `offer` says no and the core waits), and closing either end is EOF for the other once
   the messages already queued to it are read. Instead of being polled, it calls a listener
   when something arrives for the agent, so the client's pump thread sleeps until then.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from device_agent.intercore._errors import CoreUnavailableError
from device_agent.intercore._faults import FaultPlan, FaultyChannel

__all__ = [
    "CoreTransport",
    "DatagramPort",
    "DatagramTransport",
    "MemoryTransport",
    "SeqpacketTransport",
    "datagram_pipe",
    "memory_pipe",
]


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


class _Pipe:
    """Both directions of one datagram pipe, under one lock."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a datagram pipe needs room for at least one message")
        self.lock = threading.Condition()
        self.capacity = capacity
        self.to_core: deque[bytes] = deque()
        self.to_host: deque[bytes] = deque()
        self.host_closed = False
        self.core_closed = False
        self.core_waker: Callable[[], None] | None = None  # the reactor serving the core end
        self.host_listener: Callable[[], None] | None = None  # the client's pump

    def wake_core(self) -> None:
        waker = self.core_waker
        if waker is not None:
            waker()

    def wake_host(self) -> None:
        listener = self.host_listener
        if listener is not None:
            listener()


class DatagramTransport:
    """The agent's end of a `datagram_pipe` (a `CoreTransport`)."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def send(self, data: bytes) -> None:
        pipe = self._pipe
        with pipe.lock:
            while not (pipe.host_closed or pipe.core_closed) and len(pipe.to_core) >= pipe.capacity:
                pipe.lock.wait()  # back-pressure: the core's side is full
            if pipe.host_closed:
                raise CoreUnavailableError("cannot send to core: the link is closed")
            if pipe.core_closed:
                raise CoreUnavailableError("cannot send to core: the core closed the link")
            pipe.to_core.append(bytes(data))
        pipe.wake_core()

    def recv(self, timeout: float) -> bytes | None:
        pipe = self._pipe
        deadline = time.monotonic() + max(0.0, timeout)
        with pipe.lock:
            while not pipe.to_host:
                if pipe.host_closed:
                    raise CoreUnavailableError("cannot receive from core: the link is closed")
                if pipe.core_closed:
                    raise CoreUnavailableError("the core closed the link (core stopped)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                pipe.lock.wait(remaining)
            was_full = len(pipe.to_host) >= pipe.capacity
            data = pipe.to_host.popleft()
        if was_full:
            pipe.wake_core()  # the core may send again
        return data

    def close(self) -> None:
        pipe = self._pipe
        with pipe.lock:
            pipe.host_closed = True
            pipe.lock.notify_all()
        pipe.wake_core()

    def set_listener(self, listener: Callable[[], None] | None) -> None:
        """Call `listener` (from another thread, holding no lock) whenever a message for this
        end arrives or the core closes its end; it must only note the fact, not block."""
        self._pipe.host_listener = listener


class DatagramPort:
    """The core's end of a `datagram_pipe`: never blocks, for a reactor serving many cores."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Call `waker` (from another thread, holding no lock) whenever the agent sends, makes
        room, or closes its end; it must only note the fact, not block."""
        self._pipe.core_waker = waker

    def take(self) -> bytes | None:
        """The next message from the agent, or None if none is queued."""
        pipe = self._pipe
        with pipe.lock:
            if not pipe.to_core:
                return None
            data = pipe.to_core.popleft()
            pipe.lock.notify_all()  # an agent waiting for room
        return data

    def offer(self, data: bytes) -> bool:
        """Queue one message for the agent; False when its side is full (try again once woken).
        A message offered after the agent closed its end is dropped, as a socket would refuse
        it: `peer_closed` says so."""
        pipe = self._pipe
        with pipe.lock:
            if pipe.host_closed or pipe.core_closed:
                return True
            if len(pipe.to_host) >= pipe.capacity:
                return False
            pipe.to_host.append(bytes(data))
            pipe.lock.notify_all()
        pipe.wake_host()
        return True

    @property
    def peer_closed(self) -> bool:
        """The agent closed its end (EOF once `take` returns None)."""
        return self._pipe.host_closed

    def close(self) -> None:
        """The core is gone (stopped, crashed or powered off): EOF for the agent."""
        pipe = self._pipe
        with pipe.lock:
            pipe.core_closed = True
            pipe.lock.notify_all()
        pipe.wake_host()


def datagram_pipe(capacity: int = 128) -> tuple[DatagramTransport, DatagramPort]:
    """(agent end, core end) of a lossless in-process datagram pipe holding up to `capacity`
    messages per direction (an AF_UNIX SOCK_SEQPACKET pair buffers roughly that many)."""
    pipe = _Pipe(capacity)
    return DatagramTransport(pipe), DatagramPort(pipe)
