"""Starting and stopping one core process connected by a SOCK_SEQPACKET socket pair.

The argv comes from the composition root (for the simulated cores:
`firmware.core.command_line(...)`), so this package never imports `firmware`.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

from device_agent.intercore._transport import SeqpacketTransport

__all__ = ["CoreProcess"]


class CoreProcess:
    """A running core process and the agent's end of its socket."""

    def __init__(self, process: subprocess.Popen[bytes], transport: SeqpacketTransport) -> None:
        self.process = process
        self.transport = transport

    @classmethod
    def spawn(
        cls, argv_for_fd: Callable[[int], list[str]], *, max_message_bytes: int
    ) -> CoreProcess:
        """Create the socket pair and start the process with the core's end (`pass_fds`)."""
        host, core = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(argv_for_fd(core.fileno()), pass_fds=[core.fileno()])
        finally:
            core.close()
        return cls(process, SeqpacketTransport(host, max_message_bytes))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """The exit status once the process has ended (negative: the signal that ended it),
        waiting up to `timeout` for it to be reaped; None while it still runs."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """SIGKILL (a power cut for this core) and reap; returns the exit status."""
        self.process.kill()
        code = self.process.wait(timeout=10)
        self.transport.close()
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """Close the socket (the core exits on EOF); kill if it lingers."""
        self.transport.close()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)
