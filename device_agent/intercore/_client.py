"""`CoreClient`: the agent's handle on one real-time core. A thin synchronous driver over the
pure ICC link: every call sends a request, pumps the transport until the answer arrives or the
deadline passes, and queues whatever else the core sent (inference results, logs, heartbeats,
spontaneous reverts) as events for `poll()`.

Servicing: once connected, a small pump thread per client keeps the link serviced whenever the
owner is not inside a call (it acknowledges the core's frames, retransmits, and queues events),
so a core is never starved while the agent works on another core or waits on the network. The
owner's calls and the pump share one lock; the pump never waits for it (a call in progress
pumps the link itself). `close()` stops the thread and closes the transport (the core sees EOF);
`detach()` stops the thread and leaves the transport open for another client. Over a transport
that can call a listener when a message arrives (`set_listener`, the in-process datagram pipe),
the pump sleeps until then, or until its own retransmission is due, instead of waking every
`pump_interval_s`: a thousand idle cores then cost a thousand sleeping threads, not 50 000
wake-ups a second.

Memory: `stage()` consumes the model as an iterator of chunks and holds at most one chunk plus
`window` frames in flight, whatever the model size. One owner thread per client, plus its pump.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from device_agent.intercore._errors import CoreRefusedError, CoreStateError, CoreUnavailableError
from device_agent.intercore._events import (
    CoreEvent,
    CoreHeartbeat,
    CoreLog,
    CoreReverted,
    CoreStatus,
    InferenceResult,
    SelfTestReport,
)
from device_agent.intercore._exits import RunningModel
from device_agent.intercore._state import HostPhase, next_phase
from device_agent.intercore._target import ModelTarget
from device_agent.intercore._transport import CoreTransport
from firmware.icc import (
    NO_SLOT,
    OVERHEAD_BYTES,
    PROTOCOL_VERSION,
    SLOT_ANY,
    Abort,
    Ack,
    Activate,
    Begin,
    Caps,
    Confirm,
    Data,
    DeviceProfile,
    End,
    Heartbeat,
    Hello,
    IccError,
    Inference,
    Log,
    Message,
    MessageType,
    Nack,
    ReasonCode,
    ReliableLink,
    Revert,
    SelfTest,
    Status,
    Vector,
    VectorPart,
)

__all__ = ["ClientLimits", "CoreClient"]

_F = TypeVar("_F", bound=Callable[..., Any])

_DATA_HEADER = 4  # DATA: u32 offset
_VECTOR_HEADER = 7  # VECTOR: index, part, tolerance, u16 total, u16 offset


@dataclass(frozen=True)
class ClientLimits:
    response_timeout_s: float = 10.0  # how long to wait for an answer to one request
    selftest_timeout_s: float = 30.0  # ACTIVATE loads and tests a model: allow more
    max_events: int = 256  # events kept for poll(); the oldest are dropped (and counted) beyond
    # how often the pump thread services the link between calls; well under the core's
    # patience (profile.retransmit_timeout_s * profile.max_retransmits)
    pump_interval_s: float = 0.02
    # over a transport that signals arrivals: the longest the pump sleeps when nothing is in
    # flight (it wakes at once on an arrival, and at the link's retransmission deadline)
    pump_idle_s: float = 2.0


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def call(self: CoreClient, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            finally:
                if self._signalled and self._link.next_deadline() is not None:
                    self._wake.set()  # frames in flight: the pump must watch their deadline

    return call  # type: ignore[return-value]


class CoreClient:
    def __init__(
        self,
        transport: CoreTransport,
        profile: DeviceProfile,
        *,
        limits: ClientLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        nonce: Callable[[], int] = lambda: random.getrandbits(32),
    ) -> None:
        self.profile = profile
        self.limits = limits or ClientLimits()
        self._transport = transport
        self._clock = clock
        self._nonce = nonce
        self._link = ReliableLink.for_profile(profile)
        self._replies: list[Message] = []
        self._events: deque[CoreEvent] = deque()
        self.dropped_events = 0
        self.phase = HostPhase.DISCONNECTED
        self.core_id = ""
        self._established = False  # a session opened and the owner has not closed it
        self._running: RunningModel | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by the transport's listener on each arrival
        self._signalled = False  # the transport calls the listener: the pump need not poll
        self._transport_failed = False
        self._pump_thread: threading.Thread | None = None

    # -- public API ----------------------------------------------------------------------------

    def connect(self) -> CoreStatus:
        """Open a session (HELLO/CAPS) and return the core's status; from then on the link is
        serviced between calls.

        Raises:
            CoreRefusedError: no protocol version in common (reason VERSION_UNSUPPORTED).
            CoreUnavailableError: no answer within the response timeout.
        """
        with self._lock:
            status = self._connect()
        self._start_pump()
        return status

    def _connect(self) -> CoreStatus:
        self._link = ReliableLink.for_profile(self.profile)
        nonce = self._nonce() & 0xFFFFFFFF
        hello = Hello(
            nonce, 1, PROTOCOL_VERSION, self.profile.max_message_bytes, self.profile.window
        )
        deadline = self._clock() + self.limits.response_timeout_s
        self._replies.clear()
        while True:
            self._link.send_unsequenced(hello)
            resend_at = min(deadline, self._clock() + self.profile.retransmit_timeout_s)
            while self._clock() < resend_at:
                self._pump(resend_at)
                for reply in self._take_replies():
                    if isinstance(reply, Caps) and reply.nonce == nonce:
                        self._link.reset(
                            max_message_bytes=reply.max_message_bytes, window=reply.window
                        )
                        return self._connected(reply)
                    if isinstance(reply, Nack) and reply.ref_type == MessageType.HELLO:
                        raise CoreRefusedError(MessageType.HELLO, reply.reason, reply.detail)
            if self._clock() >= deadline:
                raise CoreUnavailableError("the core did not answer HELLO")

    @_locked
    def status(self) -> CoreStatus:
        """A fresh status from the core (STATUS/CAPS)."""
        self._require_connected()
        caps = self._request(Status(), lambda m: isinstance(m, Caps))
        assert isinstance(caps, Caps)
        self._note_caps(caps)
        return CoreStatus.from_caps(caps)

    @_locked
    def stage(self, target: ModelTarget, chunks: Iterable[bytes]) -> int:
        """Stream a verified model into the core's inactive slot; return the slot.

        `chunks` yields the model bytes in order (any chunk sizes); it may raise to abort (the
        core then discards the partial slot and the exception propagates).

        Raises:
            CoreRefusedError: refused before transfer (BUDGET_EXCEEDED, OPERATOR_UNSUPPORTED,
                FIRMWARE_TOO_OLD, BUSY, ...) or after it (LENGTH_MISMATCH, HASH_MISMATCH, ...).
            CoreUnavailableError: the core stopped answering.
            CoreStateError: a trial is waiting for confirm or revert.
        """
        self._advance("stage")
        try:
            begin = Begin(
                SLOT_ANY, target.model_id, target.version, target.length, target.sha256,
                target.arena_bytes, target.input, target.output, target.min_firmware_version,
                target.operators, len(target.self_test),
            )  # fmt: skip
            slot = self._expect_ack(
                self._request(begin, _answers(MessageType.BEGIN)), MessageType.BEGIN
            )
            try:
                self._send_vectors(target)
                self._send_model(chunks)
            except CoreRefusedError:
                raise
            except CoreUnavailableError:
                raise
            except BaseException:
                self._abort()
                raise
            self._expect_ack(self._request(End(), _answers(MessageType.END)), MessageType.END)
        except BaseException:
            self.phase = (
                next_phase(self.phase, "failed") if self.phase == HostPhase.STAGING else self.phase
            )
            raise
        self._advance("staged")
        return slot

    @_locked
    def activate(self, slot: int, *, confirm_timeout_s: float = 60.0) -> SelfTestReport:
        """Load the staged slot, run its self-test, and start the trial.

        The core reverts by itself if `confirm()` does not follow within `confirm_timeout_s`.

        Raises:
            CoreRefusedError: the model failed to load or its self-test failed (`reason` says
                which); the core already went back to its previous model.
        """
        self._require(HostPhase.STAGED, "activate")
        msg = Activate(slot, int(confirm_timeout_s * 1000))
        reply = self._request(
            msg,
            lambda m: (
                isinstance(m, SelfTest)
                or (isinstance(m, Nack) and m.ref_type == MessageType.ACTIVATE)
            ),
            timeout=self.limits.selftest_timeout_s,
        )
        if isinstance(reply, Nack):
            raise CoreRefusedError(MessageType.ACTIVATE, reply.reason, reply.detail)
        assert isinstance(reply, SelfTest)
        report = SelfTestReport.from_message(reply)
        if not reply.passed:
            self._advance("rejected")
            raise CoreRefusedError(MessageType.SELFTEST, reply.reason, report.summary)
        self._advance("activated")
        return report

    @_locked
    def confirm(self, slot: int) -> None:
        """Make the trial model the confirmed one."""
        self._require(HostPhase.TRIAL, "confirm")
        self._expect_ack(
            self._request(Confirm(slot), _answers(MessageType.CONFIRM)), MessageType.CONFIRM
        )
        self._advance("confirmed")

    @_locked
    def revert(self) -> int | None:
        """End a trial, or roll a confirmed model back to the previous one; return the slot
        now running (None if the core has no model left).

        Raises:
            CoreRefusedError: NOTHING_TO_REVERT.
        """
        self._require_connected()
        reply = self._request(
            Revert(NO_SLOT, ReasonCode.HOST_REQUESTED),
            lambda m: (
                isinstance(m, Revert) or (isinstance(m, Nack) and m.ref_type == MessageType.REVERT)
            ),
        )
        if isinstance(reply, Nack):
            raise CoreRefusedError(MessageType.REVERT, reply.reason, reply.detail)
        assert isinstance(reply, Revert)
        self._advance("reverted")
        return None if reply.slot == NO_SLOT else reply.slot

    @_locked
    def poll(self, timeout: float = 0.0) -> list[CoreEvent]:
        """Pump the link for up to `timeout` seconds and return the queued events."""
        if self.phase != HostPhase.DISCONNECTED:
            deadline = self._clock() + timeout
            self._pump(deadline)
            while self._clock() < deadline and not self._events:
                self._pump(deadline)
        events = list(self._events)
        self._events.clear()
        return events

    @property
    def running(self) -> RunningModel | None:
        """The model the core last said it runs (its CAPS, or its latest inference result);
        kept after the link is lost, so that a crash can name it."""
        return self._running

    @property
    def lost(self) -> bool:
        """A session was open and its link is gone without `close()` or `detach()`: the core
        exited, faulted or stopped answering."""
        return self._established and self.phase is HostPhase.DISCONNECTED

    @property
    def link_stats(self) -> dict[str, int]:
        stats = vars(self._link.stats)
        return {**stats, "dropped_events": self.dropped_events}

    def close(self) -> None:
        """Stop servicing the link and close the transport: the core sees EOF and exits."""
        self._stop_pump()
        # A call stuck in another thread (shutdown mid-update) must not keep the core waiting:
        # after a short wait the transport is closed anyway and that call fails.
        locked = self._lock.acquire(timeout=2.0)
        try:
            self._transport.close()
            self.phase, self._established = HostPhase.DISCONNECTED, False
        finally:
            if locked:
                self._lock.release()

    def detach(self) -> None:
        """Stop servicing the link but leave the transport open (another client takes it over,
        as an agent restarted in the same process does)."""
        self._stop_pump()
        with self._lock:
            self.phase, self._established = HostPhase.DISCONNECTED, False

    # -- the pump thread -----------------------------------------------------------------------

    def _start_pump(self) -> None:
        if self._pump_thread is not None and self._pump_thread.is_alive():
            return
        if self._stopping.is_set() or self._transport_failed:
            return
        listen = getattr(self._transport, "set_listener", None)
        if callable(listen):
            listen(self._wake.set)
            self._signalled = True
        name = f"core-pump-{self.core_id or id(self)}"
        self._pump_thread = threading.Thread(target=self._pump_loop, name=name, daemon=True)
        self._pump_thread.start()

    def _stop_pump(self) -> None:
        self._stopping.set()
        self._wake.set()
        thread = self._pump_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _pump_loop(self) -> None:
        """Between the owner's calls: take what arrived, acknowledge it, retransmit when due."""
        interval = self.limits.pump_interval_s
        wait = interval
        while True:
            if self._signalled:
                self._wake.wait(wait)
                self._wake.clear()  # before draining: a later arrival sets it again
            else:
                self._stopping.wait(wait)
            if self._stopping.is_set():
                return
            if not self._lock.acquire(blocking=False):
                wait = interval  # a call is in progress and pumps the link itself
                continue
            try:
                if self._stopping.is_set() or self._transport_failed:
                    return
                if self.phase != HostPhase.DISCONNECTED:
                    self._drain()
            except CoreUnavailableError:
                pass  # the phase says DISCONNECTED; the owner finds out on its next call
            finally:
                wait = self._pump_wait() if self._signalled else interval
                self._lock.release()

    def _pump_wait(self) -> float:
        """How long a signalled pump may sleep: until the link's next retransmission, within
        [pump_interval_s, pump_idle_s]."""
        limits = self.limits
        deadline = self._link.next_deadline()
        if deadline is None:
            return limits.pump_idle_s
        return min(limits.pump_idle_s, max(limits.pump_interval_s, deadline - self._clock()))

    def _drain(self) -> None:
        """Flush, then take every message already received, without waiting."""
        self._flush()
        for _ in range(4 * self._link.window + 16):  # bounded: never hold the lock for long
            data = self._recv(0.0)
            if data is None:
                break
            for message in self._link.receive(data):
                self._dispatch(message)
        self._flush()

    # -- transfer helpers ----------------------------------------------------------------------

    def _room(self, header: int) -> int:
        return self._link.max_message_bytes - OVERHEAD_BYTES - header

    def _send_flow(self, message: Message) -> None:
        """Send with back-pressure: wait while the window is full."""
        deadline = self._clock() + self.limits.response_timeout_s
        while not self._link.can_send():
            if self._clock() >= deadline:
                raise CoreUnavailableError("the core stopped acknowledging data")
            self._pump(deadline, until_progress=True)
            self._raise_on_nack()
        self._link.send(message)
        self._flush()
        self._raise_on_nack()

    def _send_vectors(self, target: ModelTarget) -> None:
        room = self._room(_VECTOR_HEADER)
        for index, vector in enumerate(target.self_test):
            for part, data in (
                (VectorPart.INPUT, vector.input),
                (VectorPart.EXPECTED, vector.expected),
            ):
                for offset in range(0, max(len(data), 1), room):
                    piece = data[offset : offset + room]
                    self._send_flow(Vector(index, part, vector.tolerance, len(data), offset, piece))

    def _send_model(self, chunks: Iterable[bytes]) -> None:
        room, offset = self._room(_DATA_HEADER), 0
        iterator = iter(chunks)
        while True:
            with self._unlocked():  # a chunk may take long to arrive: let the pump run meanwhile
                chunk = next(iterator, None)
            if chunk is None:
                return
            view = memoryview(chunk)
            for start in range(0, len(view), room):
                piece = bytes(view[start : start + room])
                self._send_flow(Data(offset, piece))
                offset += len(piece)

    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()

    def _abort(self) -> None:
        with contextlib.suppress(CoreUnavailableError, CoreRefusedError):
            self._request(Abort(ReasonCode.ABORTED), _answers(MessageType.ABORT))

    def _raise_on_nack(self) -> None:
        for reply in self._replies:
            if isinstance(reply, Nack):
                self._replies.remove(reply)
                raise CoreRefusedError(reply.ref_type, reply.reason, reply.detail)

    # -- request/response ----------------------------------------------------------------------

    def _request(
        self, message: Message, matches: Callable[[Message], bool], *, timeout: float | None = None
    ) -> Message:
        self._raise_on_nack()  # a refusal of an earlier message of this operation wins
        self._replies.clear()
        self._link.send(message)
        deadline = self._clock() + (timeout or self.limits.response_timeout_s)
        while True:
            for reply in self._take_replies():
                if matches(reply):
                    return reply
                if isinstance(reply, Nack):  # a refusal of an earlier request in this operation
                    raise CoreRefusedError(reply.ref_type, reply.reason, reply.detail)
            if self._clock() >= deadline:
                raise CoreUnavailableError(f"no answer to {type(message).__name__} in time")
            self._pump(deadline, until_progress=True)

    @staticmethod
    def _expect_ack(reply: Message, step: MessageType) -> int:
        if isinstance(reply, Nack):
            raise CoreRefusedError(step, reply.reason, reply.detail)
        assert isinstance(reply, Ack)
        return reply.value

    def _take_replies(self) -> list[Message]:
        replies, self._replies = self._replies, []
        return replies

    def _flush(self) -> None:
        try:
            frames = self._link.outbound(self._clock())
        except IccError as exc:
            self.phase = HostPhase.DISCONNECTED
            raise CoreUnavailableError(str(exc)) from exc
        for frame in frames:
            try:
                self._transport.send(frame)
            except CoreUnavailableError:
                self.phase, self._transport_failed = HostPhase.DISCONNECTED, True
                raise

    def _recv(self, timeout: float) -> bytes | None:
        try:
            return self._transport.recv(timeout)
        except CoreUnavailableError:
            # EOF or a closed socket: this transport is finished (a restart brings a new one)
            self.phase, self._transport_failed = HostPhase.DISCONNECTED, True
            raise

    def _pump(self, deadline: float, *, until_progress: bool = False) -> None:
        """Flush, then receive for at most until `deadline` (or the next retransmission)."""
        self._flush()
        while True:
            now = self._clock()
            wake = self._link.next_deadline()
            wait = min(deadline, wake) - now if wake is not None else deadline - now
            data = self._recv(max(0.0, min(wait, 0.05)))
            if data is not None:
                for message in self._link.receive(data):
                    self._dispatch(message)
                self._flush()
                return
            self._flush()
            if not until_progress or self._clock() >= deadline:
                return

    def _dispatch(self, message: Message) -> None:
        event: CoreEvent | None = None
        match message:
            case Inference():
                event = InferenceResult.from_message(self.core_id, message)
                self._running = RunningModel(message.slot, message.model_id, message.version)
            case Log():
                event = CoreLog(self.core_id, message.level.name.lower(), message.text)
            case Heartbeat():
                running = None if message.active_slot == NO_SLOT else message.active_slot
                state = message.state.name.lower()
                event = CoreHeartbeat(
                    self.core_id, message.uptime_ms, state, running, message.inferences
                )
            case Revert() if message.reason != ReasonCode.HOST_REQUESTED:
                event = CoreReverted(
                    self.core_id,
                    None if message.slot == NO_SLOT else message.slot,
                    message.reason.name,
                )
                if self.phase == HostPhase.TRIAL:
                    self.phase = HostPhase.READY
            case _:
                self._replies.append(message)
        if event is not None:
            if len(self._events) >= self.limits.max_events:
                self._events.popleft()
                self.dropped_events += 1
            self._events.append(event)

    # -- state ---------------------------------------------------------------------------------

    def _note_caps(self, caps: Caps) -> None:
        slot = caps.trial_slot if caps.trial_slot != NO_SLOT else caps.active_slot
        model = caps.active_model
        self._running = None if model is None else RunningModel(slot, model.model_id, model.version)

    def _connected(self, caps: Caps) -> CoreStatus:
        status = CoreStatus.from_caps(caps)
        self.core_id = caps.core_id
        self._established = True
        self._note_caps(caps)
        if caps.trial_slot != NO_SLOT:
            event = "connect-trial"
        elif any(s.state.name == "STAGED" for s in caps.slots):
            event = "connect-staged"
        else:
            event = "connect-ready"
        self.phase = next_phase(
            HostPhase.READY if self.phase == HostPhase.STAGING else self.phase, event
        )
        return status

    def _advance(self, event: str) -> None:
        self.phase = next_phase(self.phase, event)

    def _require(self, phase: HostPhase, action: str) -> None:
        if self.phase != phase:
            raise CoreStateError(f"cannot {action} while the core is {self.phase.value}")

    def _require_connected(self) -> None:
        if self.phase == HostPhase.DISCONNECTED:
            raise CoreStateError("not connected: call connect() first")


def _answers(step: MessageType) -> Callable[[Message], bool]:
    return lambda m: isinstance(m, Ack | Nack) and m.ref_type == step
