"""TLS for device connections with memory BIOs: small per-connection state for many devices.

asyncio's own TLS transport gives every connection a 256 KiB receive buffer (`SSLProtocol.
max_size`), so 10,000 idle devices would cost about 2.5 GiB. This layer keeps only OpenSSL's
state and what is actually in flight, and hands the application a plain `asyncio.Transport`.

Invariants:
- The application protocol is created only after a completed handshake, so it never sees bytes
  from an unauthenticated TLS peer; a handshake that fails or exceeds its timeout aborts the
  socket without involving it.
- Whatever OpenSSL wants to send (handshake records, session tickets, close_notify) is written to
  the socket after every operation that may produce it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

__all__ = ["TlsServerProtocol"]

_READ_CHUNK = 16 * 1024


class _AppTransport(asyncio.Transport):
    """What the application protocol writes to: encrypts into the TLS layer."""

    def __init__(self, tls: TlsServerProtocol) -> None:
        super().__init__()
        self._tls = tls

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls.write(bytes(data))

    def close(self) -> None:
        self._tls.close()

    def abort(self) -> None:
        self._tls.abort()

    def is_closing(self) -> bool:
        return self._tls.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._tls.ssl_object
        return self._tls.raw_extra_info(name, default)


class TlsServerProtocol(asyncio.Protocol):
    def __init__(
        self,
        context: ssl.SSLContext,
        app_factory: Callable[[], asyncio.Protocol],
        handshake_timeout_s: float,
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle],
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._app_factory = app_factory
        self._app: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer = call_later(handshake_timeout_s, self.abort)
        self.closing = False

    # --- socket side ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if self._app is None:
            self._handshake()
        else:
            self._read()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self.closing = True
        if self._app is not None:
            app, self._app = self._app, None
            app.connection_lost(exc)

    def raw_extra_info(self, name: str, default: Any) -> Any:
        return default if self._transport is None else self._transport.get_extra_info(name, default)

    # --- TLS ------------------------------------------------------------------------------------

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending and self._transport is not None and not self._transport.is_closing():
            self._transport.write(pending)

    def _handshake(self) -> None:
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError):
            self._flush()
            self.abort()
            return
        self._timer.cancel()
        self._flush()
        self._app = self._app_factory()
        self._app.connection_made(_AppTransport(self))
        if not self.closing:
            self._read()

    def _read(self) -> None:
        chunks: list[bytes] = []
        eof = False
        try:
            while True:
                chunk = self.ssl_object.read(_READ_CHUNK)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except (ssl.SSLError, OSError):
            self.abort()
            return
        self._flush()
        if chunks and self._app is not None and not self.closing:
            self._app.data_received(b"".join(chunks))
        if eof:
            self.close()

    # --- application side ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.ssl_object.write(data)
        except (ssl.SSLError, OSError):
            self.abort()
            return
        self._flush()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        # close_notify is a courtesy; the socket closes either way.
        with contextlib.suppress(ssl.SSLError, OSError):
            self.ssl_object.unwrap()
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()
