"""Many simulated M4 cores in one process: one reactor thread drives every `CoreMachine`.

`python -m firmware.core` runs one core per OS process (about 40 MiB each, with numpy and the
TFLM runtime loaded). A `CoreReactor` runs thousands in one process instead, each exactly as
that process would: its own slot directory, its own inter-core link, its own boot from the slot
files (so a trial cut short by a power cut reverts at the next boot), real TFLM self-tests and
inference. What the cores share is the thread and, where the model bytes and arena size are the
same, the TFLM interpreter (`InterpreterCache`).

The link is a port (`CoreLink`): the core's non-blocking end of an in-process datagram pipe
whose other end the agent holds (the composition root joins them: `device_agent` may not import
`firmware`, nor `firmware` anything of ours). The reactor waits, without polling, for the
earliest `next_deadline()` of its cores or for a link to wake it.

Invariants (each mirrors `firmware.core.run` and `main`):
 * Everything a machine does runs on the reactor thread: booting, receiving, ticking, and
   being dropped. A `kill` is a command to that thread, so a core dies between two steps of its
   own, never inside one; the crash points (`firmware.faults`) cover the inside.
 * Per core, one message is handled at a time: outbound frames, the "message handled" fault
   check, then the next message, as the process loop does.
 * Back-pressure: a core whose frames the agent's side has no room for sends nothing more and
   is not ticked until the agent makes room (like a process blocked in `send`).
 * Exit statuses are the process's: 0 after EOF, 2 when the core cannot boot, 3 when the host
   stopped acknowledging, `CRASH_EXIT_CODE` when a fault hook fired, -SIGKILL after `kill`.
   A core that ended has closed its link: the agent sees EOF after the frames already queued.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from firmware._core import CoreConfig, CoreMachine
from firmware._errors import FirmwareError
from firmware._image import FirmwareImage
from firmware._runtime import InterpreterCache
from firmware._slots import SlotStore
from firmware.faults import CRASH_EXIT_CODE, CoreHalted, FaultHooks, halt
from firmware.icc import PeerUnresponsiveError, profile_named

__all__ = ["CoreBoot", "CoreLink", "CoreReactor", "HostedCore", "shared_reactor"]

log = logging.getLogger(__name__)

KILLED = -signal.SIGKILL  # what subprocess reports for a SIGKILLed process
_BURST = 32  # messages one core handles before the others get a turn


class CoreLink(Protocol):
    """The core's end of an in-process link (e.g. `device_agent.intercore.DatagramPort`)."""

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Have `waker` called when the agent sends, makes room, or closes its end."""

    def take(self) -> bytes | None:
        """The next message from the agent, or None."""

    def offer(self, data: bytes) -> bool:
        """Queue one message for the agent; False when its side is full."""

    @property
    def peer_closed(self) -> bool:
        """The agent closed its end."""

    def close(self) -> None:
        """EOF for the agent."""


@dataclass(frozen=True)
class CoreBoot:
    """What one core boots with: the arguments of `firmware.core.command_line`."""

    core_id: str
    state_dir: Path
    firmware: Path
    profile: str
    inference_period_s: float = 0.5
    heartbeat_period_s: float = 5.0
    seed: int = 0
    crash_point: str | None = None
    crash_before_message: int | None = None
    crash_after_message: int | None = None
    crash_after_inferences: int | None = None
    crash_models: frozenset[str] | None = None  # None: the inference crash hits any model
    selftest_fail_models: frozenset[str] = frozenset()


class HostedCore:
    """One boot of one core in a reactor: the in-process counterpart of a core process."""

    def __init__(self, reactor: CoreReactor, boot: CoreBoot, link: CoreLink, boot_id: int) -> None:
        self.boot = boot
        self.boot_id = boot_id  # unique within the process, like a pid
        self.link = link
        self._reactor = reactor
        self.machine: CoreMachine | None = None
        self.deadline: float | None = None  # the reactor's timer entry for it
        self.outbox: deque[bytes] = deque()  # frames the agent's side had no room for yet
        self.max_message_bytes = 0
        self._status: int | None = None
        self._ended = threading.Event()

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """How the core ended, waiting up to `timeout`; None while it runs."""
        self._ended.wait(timeout)
        return self._status

    def kill(self) -> int:
        """A power cut: the reactor drops the core where it stands (its slot files stay as they
        are on disk) and closes its link; returns the exit status."""
        if self.alive:
            self._reactor._submit(lambda: self._reactor._end(self, KILLED))
            self._ended.wait()
        assert self._status is not None
        return self._status

    def _finish(self, status: int) -> None:
        self.machine = None
        self.outbox.clear()
        self.link.set_waker(None)
        self.link.close()
        self._status = status
        self._ended.set()


class CoreReactor:
    """One thread serving many hosted cores; `boot` starts one (from any thread)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, name: str = "core-host"
    ) -> None:
        self.interpreters = InterpreterCache()
        self._clock = clock
        self._cond = threading.Condition()
        self._commands: deque[Callable[[], None]] = deque()
        self._ready: dict[int, HostedCore] = {}  # woken by their link, in arrival order
        self._timers: list[tuple[float, int, HostedCore]] = []
        self._order = itertools.count()
        self._boot_ids = itertools.count(1)
        self._cores: dict[int, HostedCore] = {}
        self._stopping = False
        self.wakeups = 0  # turns of the reactor loop (it sleeps between them)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def cores(self) -> int:
        """Cores running now."""
        return len(self._cores)

    def boot(self, boot: CoreBoot, link: CoreLink) -> HostedCore:
        """Boot a core on `link`, as `python -m firmware.core` would (it boots on the reactor
        thread; messages the agent sends meanwhile wait in the link)."""
        core = HostedCore(self, boot, link, next(self._boot_ids))
        link.set_waker(lambda: self._wake(core))
        self._submit(lambda: self._boot(core))
        return core

    def close(self) -> None:
        """Power off every core and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)
        for core in list(self._cores.values()):
            self._end(core, KILLED)

    def __enter__(self) -> CoreReactor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- other threads -----------------------------------------------------------------------------

    def _submit(self, command: Callable[[], None]) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the core reactor is closed")
            self._commands.append(command)
            self._cond.notify()

    def _wake(self, core: HostedCore) -> None:
        with self._cond:
            if core.boot_id not in self._ready:
                self._ready[core.boot_id] = core
                self._cond.notify()

    # -- the reactor thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._commands or self._ready or self._stopping):
                    timeout = self._timers[0][0] - self._clock() if self._timers else None
                    if timeout is not None and timeout <= 0:
                        break
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                commands, self._commands = self._commands, deque()
                ready, self._ready = self._ready, {}
                self.wakeups += 1
            for command in commands:
                command()
            for core in ready.values():
                self._service(core)
            now = self._clock()
            while self._timers and self._timers[0][0] <= now:
                deadline, _, core = heapq.heappop(self._timers)
                if core.deadline == deadline:  # else a later entry replaced this one
                    core.deadline = None
                    self._service(core)

    def _boot(self, core: HostedCore) -> None:
        b = core.boot
        try:
            profile = profile_named(b.profile)
            hooks = FaultHooks(
                b.crash_point,
                b.crash_before_message,
                b.crash_after_message,
                b.crash_after_inferences,
                crash_models=b.crash_models,
                selftest_fail_models=b.selftest_fail_models,
                die=halt,
            )
            config = CoreConfig(
                core_id=b.core_id,
                profile=profile,
                image=FirmwareImage.load(b.firmware),
                inference_period_s=b.inference_period_s,
                heartbeat_period_s=b.heartbeat_period_s,
                sensor_seed=b.seed,
            )
            store = SlotStore(b.state_dir / b.core_id, hooks)
            core.machine = CoreMachine(config, store, self._clock(), interpreters=self.interpreters)
        except (FirmwareError, ValueError) as exc:
            log.warning("core %s cannot boot: %s", b.core_id, exc)
            return self._end(core, 2)
        except CoreHalted:
            return self._end(core, CRASH_EXIT_CODE)
        core.max_message_bytes = profile.max_message_bytes
        self._cores[core.boot_id] = core
        self._service(core)

    def _end(self, core: HostedCore, status: int) -> None:
        if not core.alive:
            return
        self._cores.pop(core.boot_id, None)
        core.deadline = None
        core._finish(status)

    def _service(self, core: HostedCore) -> None:
        if core.machine is None:
            return
        try:
            ended = self._pump(core, core.machine)
        except CoreHalted:
            return self._end(core, CRASH_EXIT_CODE)
        except PeerUnresponsiveError as exc:
            if core.link.peer_closed:
                return self._end(core, 0)  # the host shut down: EOF behind the silence
            log.warning("core %s: %s", core.boot.core_id, exc)
            return self._end(core, 3)
        except Exception:  # a bug in the core: the process would die with a traceback
            log.exception("core %s failed", core.boot.core_id)
            return self._end(core, 1)
        if ended:
            return self._end(core, 0)
        if core.machine is not None and not core.outbox:
            deadline = core.machine.next_deadline()
            if deadline != core.deadline:
                core.deadline = deadline
                heapq.heappush(self._timers, (deadline, next(self._order), core))

    def _pump(self, core: HostedCore, machine: CoreMachine) -> bool:
        """Run the process loop for up to `_BURST` messages; True at EOF."""
        link, hooks = core.link, machine.hooks
        if not self._flush(core):
            return False  # still blocked: the link wakes us when the agent makes room
        for _ in range(_BURST):
            core.outbox.extend(machine.outbound(self._clock()))
            if not self._flush(core):
                return False
            hooks.message_handled()
            data = link.take()
            if data is None:
                return link.peer_closed
            if len(data) > core.max_message_bytes:
                continue  # oversized: the profile forbids it; the sender will time out
            machine.receive(data, self._clock())
        self._wake(core)  # more may be waiting: after the other cores' turn
        return False

    @staticmethod
    def _flush(core: HostedCore) -> bool:
        while core.outbox:
            if not core.link.offer(core.outbox[0]):
                return False
            core.outbox.popleft()
        return True


_shared: CoreReactor | None = None
_shared_lock = threading.Lock()


def shared_reactor() -> CoreReactor:
    """The process's default reactor, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CoreReactor()
        return _shared
