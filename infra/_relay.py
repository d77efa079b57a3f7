"""One simulated device's network: loopback relays that can be cut (a private part of the fleet).

Every connection the device opens to a loopback service goes through a listener of its own that
forwards to the real port. Cutting aborts the open connections (an RST, as a dropped link looks
to the device) and refuses new ones until restored. A trip cuts in the middle of a response:
once a request carrying a marker (e.g. `/targets/`) went up, after N bytes of its answer.

Invariants:
- While cut, no byte is forwarded in either direction.
- A trip fires at most once; its cut heals after `restore_after_s` when that is set.
"""

from __future__ import annotations

import asyncio

__all__ = ["Relay"]


class Relay:
    """One device's loopback relays, keyed by upstream (host, port); all share the fleet's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listeners: dict[tuple[str, int], tuple[asyncio.Server, int]] = {}
        self._open: set[asyncio.StreamWriter] = set()
        self.cut = False
        self.refused = 0
        self.trip: tuple[bytes, int] | None = None  # (request marker, response bytes) -> cut
        self.restore_after_s: float | None = None  # a trip's cut heals by itself after this
        self.trips = 0

    async def port_for(self, host: str, port: int) -> int:
        key = (host, port)
        if key not in self._listeners:
            server = await asyncio.start_server(
                lambda r, w: self._accept(r, w, key), host="127.0.0.1", port=0
            )
            self._listeners[key] = (server, server.sockets[0].getsockname()[1])
        return self._listeners[key][1]

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: tuple[str, int]
    ) -> None:
        if self.cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", key[1])
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        armed: list[int] = []  # response bytes left before the trip cuts, once a request matched
        await asyncio.gather(
            self._pipe(reader, up_writer, armed, request=True),
            self._pipe(up_reader, writer, armed, request=False),
        )
        self._open.difference_update((writer, up_writer))
        for side in (writer, up_writer):
            side.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        armed: list[int],
        *,
        request: bool,
    ) -> None:
        try:
            while chunk := await reader.read(4096 if armed else 65536):
                if self.cut:
                    break
                if request and self.trip is not None and self.trip[0] in chunk:
                    armed.append(self.trip[1])
                    self.trip = None
                if not request and armed:
                    chunk = chunk[: armed[0]]
                    armed[0] -= len(chunk)
                    writer.write(chunk)
                    await writer.drain()
                    if armed[0] <= 0:
                        self.set_cut(True)  # mid-response: a network cut during a download
                        self.trips += 1
                        if self.restore_after_s is not None:
                            asyncio.get_running_loop().call_later(
                                self.restore_after_s, self.set_cut, False
                            )
                        break
                    continue
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            writer.transport.abort()
            return
        if self.cut:
            writer.transport.abort()
        elif not writer.is_closing():
            try:
                writer.write_eof()  # a FIN, passed on: the other direction still flows
            except (OSError, RuntimeError):
                writer.transport.abort()

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for writer in list(self._open):
                writer.transport.abort()

    async def duty_cycle(self, awake_s: float, asleep_s: float, first_s: float) -> None:
        """A device that sleeps: cut for `asleep_s` after every `awake_s` awake, the first sleep
        `first_s` from now (so a fleet's devices do not all sleep at once). Runs until
        cancelled; leaves the link restored."""
        try:
            await asyncio.sleep(first_s)
            while True:
                self.set_cut(True)
                await asyncio.sleep(asleep_s)
                self.set_cut(False)
                await asyncio.sleep(awake_s)
        finally:
            self.set_cut(False)

    async def close(self) -> None:
        self.set_cut(True)
        for server, _ in self._listeners.values():
            server.close()
            await server.wait_closed()
