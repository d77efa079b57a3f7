"""A core process tells a host that shut down (EOF, possibly behind unread datagrams) from a host
that merely went silent: only the second is worth a warning and exit code 3."""

from __future__ import annotations

import socket

from firmware.core import _host_gone


def test_eof_behind_unread_datagrams_means_the_host_is_gone() -> None:
    host, core = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        host.send(b"late frame")
        host.close()
        assert _host_gone(core)
    finally:
        core.close()


def test_a_silent_host_with_its_socket_open_is_not_gone() -> None:
    host, core = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        host.send(b"a frame")
        assert not _host_gone(core)
    finally:
        host.close()
        core.close()
