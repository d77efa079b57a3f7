"""Reliable, in-order, windowed delivery of messages over a path that may lose, duplicate,
reorder, split or corrupt them. Pure: bytes in, messages out, time passed in by the driver.

The scheme is go-back-N with cumulative acknowledgements:

 * Each sequenced frame carries `seq` (mod 2**16). A sender has at most `window` frames in
   flight; further messages wait in a queue the caller bounds with `can_send()`.
 * Every frame carries `ack`: the next sequence number this side expects. An in-order frame is
   delivered and advances it; a duplicate or out-of-order frame is dropped and re-acknowledged.
   When no outgoing frame can carry an owed acknowledgement, a bare WINDOW frame does.
 * When the oldest frame in flight stays unacknowledged for its timeout, every frame in flight
   is sent again. The timeout starts at `retransmit_timeout_s` and doubles with each round the
   oldest frame has had, up to `max_retransmit_timeout_s` (exponential back-off: a peer starved
   of CPU for a few seconds is waited for, and is not flooded meanwhile). After
   `max_retransmits` rounds the peer is declared unresponsive.
 * Unsequenced frames (HELLO, CAPS, NACK of a handshake) bypass all of this; the session layer
   retries them itself.

Invariants:
 * Messages returned by `receive` are each delivered exactly once and in the order sent, for any
   pattern of loss, duplication, reordering, splitting and corruption that the CRC detects.
 * The link holds at most `window` encoded frames in flight plus what the caller queued.
 * `reset()` forgets everything: both ends call it when a handshake opens a new session.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from firmware.icc._errors import DecodeError, LocalProtocolError, PeerUnresponsiveError
from firmware.icc._framing import (
    FLAG_ACK_VALID,
    FLAG_SEQUENCED,
    Frame,
    FrameDecoder,
    encode_frame,
)
from firmware.icc._message_codec import decode_message, encode_message
from firmware.icc._messages import UNSEQUENCED_TYPES, Message, MessageType
from firmware.icc._profiles import DeviceProfile

__all__ = ["LinkStats", "ReliableLink"]

_SEQ_MOD = 1 << 16
_HALF = _SEQ_MOD // 2


@dataclass
class LinkStats:
    """Counters for link-error telemetry."""

    frames_sent: int = 0
    frames_received: int = 0
    retransmissions: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    undecodable: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0


@dataclass
class _InFlight:
    seq: int
    type: MessageType
    payload: bytes
    sent_at: float
    rounds: int = 0


class ReliableLink:
    """One end of a reliable inter-core link."""

    def __init__(
        self,
        *,
        max_message_bytes: int,
        window: int,
        retransmit_timeout_s: float,
        max_retransmits: int,
        max_retransmit_timeout_s: float | None = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.window = window
        self._rto = retransmit_timeout_s
        self._max_rto = max(retransmit_timeout_s, max_retransmit_timeout_s or retransmit_timeout_s)
        self._max_rounds = max_retransmits
        self.stats = LinkStats()
        self.reset()

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> ReliableLink:
        """A link with the profile's message size, window and retransmission limits."""
        return cls(
            max_message_bytes=profile.max_message_bytes,
            window=profile.window,
            retransmit_timeout_s=profile.retransmit_timeout_s,
            max_retransmits=profile.max_retransmits,
            max_retransmit_timeout_s=profile.max_retransmit_timeout_s,
        )

    def reset(self, *, max_message_bytes: int | None = None, window: int | None = None) -> None:
        """Start a new session, optionally with negotiated (smaller) limits."""
        if max_message_bytes is not None:
            self.max_message_bytes = min(self.max_message_bytes, max_message_bytes)
        if window is not None:
            self.window = max(1, min(self.window, window))
        self._next_seq = 0
        self._expected = 0
        self._ack_owed = False
        self._in_flight: deque[_InFlight] = deque()
        self._queue: deque[tuple[MessageType, bytes]] = deque()
        self._control: deque[tuple[MessageType, bytes]] = deque()
        self._decoder = FrameDecoder(self.max_message_bytes)

    # -- sending -------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue `message` for reliable delivery.

        Raises:
            MessageTooLargeError: it does not fit in one frame of this link.
        """
        kind, payload = self._checked(message)
        self._queue.append((kind, payload))

    def send_unsequenced(self, message: Message) -> None:
        """Send `message` once, outside reliable delivery (handshake messages only).

        Raises:
            LocalProtocolError: the type may not travel unsequenced.
        """
        kind, payload = self._checked(message)
        if kind not in UNSEQUENCED_TYPES:
            raise LocalProtocolError(f"{kind.name} must be sent sequenced")
        self._control.append((kind, payload))

    def can_send(self) -> bool:
        """Whether one more message fits in the window (callers use it for back-pressure)."""
        return len(self._in_flight) + len(self._queue) < self.window

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight, no acknowledgement owed."""
        return not (self._in_flight or self._queue or self._control or self._ack_owed)

    @property
    def unacknowledged(self) -> int:
        return len(self._in_flight) + len(self._queue)

    def outbound(self, now: float) -> list[bytes]:
        """Frames to put on the transport now: handshake, retransmissions, new frames, acks.

        Raises:
            PeerUnresponsiveError: the oldest frame was retransmitted `max_retransmits` times.
        """
        out: list[bytes] = []
        while self._control:
            kind, payload = self._control.popleft()
            out.append(self._encode(Frame(type=kind, payload=payload)))
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            if self._in_flight[0].rounds >= self._max_rounds:
                raise PeerUnresponsiveError(
                    f"frame {self._in_flight[0].seq} unacknowledged after "
                    f"{self._max_rounds} retransmissions"
                )
            for frame in self._in_flight:
                frame.sent_at = now
                frame.rounds += 1
                self.stats.retransmissions += 1
                out.append(self._encode_sequenced(frame))
        while self._queue and len(self._in_flight) < self.window:
            kind, payload = self._queue.popleft()
            frame = _InFlight(seq=self._next_seq, type=kind, payload=payload, sent_at=now)
            self._next_seq = (self._next_seq + 1) % _SEQ_MOD
            self._in_flight.append(frame)
            out.append(self._encode_sequenced(frame))
        if self._ack_owed:
            out.append(self._encode(Frame(type=MessageType.WINDOW, payload=b"")))
        return out

    def next_deadline(self) -> float | None:
        """When `outbound` must next be called even if nothing arrives (a retransmission)."""
        if not self._in_flight:
            return None
        oldest = self._in_flight[0]
        return oldest.sent_at + min(self._rto * (1 << oldest.rounds), self._max_rto)

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Message]:
        """Feed received bytes; return the messages now deliverable, in order.

        Never raises on bad input: corrupt frames are counted and dropped, and the sender's
        retransmission repairs the gap.
        """
        delivered: list[Message] = []
        for frame in self._decoder.feed(data):
            self.stats.frames_received += 1
            if frame.ack_valid:
                self._on_ack(frame.ack)
            if frame.sequenced:
                message = self._accept_sequenced(frame)
            elif frame.type in UNSEQUENCED_TYPES and frame.type != MessageType.WINDOW:
                message = self._decode(frame)
            else:
                message = None
            if message is not None:
                delivered.append(message)
        self.stats.bad_frames = self._decoder.bad_frames
        self.stats.discarded_bytes = self._decoder.discarded_bytes
        return delivered

    def _accept_sequenced(self, frame: Frame) -> Message | None:
        self._ack_owed = True
        distance = (frame.seq - self._expected) % _SEQ_MOD
        if distance != 0:
            if distance >= _HALF:
                self.stats.duplicates += 1
            else:
                self.stats.out_of_order += 1
            return None
        self._expected = (self._expected + 1) % _SEQ_MOD
        return self._decode(frame)

    def _on_ack(self, ack: int) -> None:
        if not self._in_flight:
            return
        acked = (ack - self._in_flight[0].seq) % _SEQ_MOD
        if 0 < acked <= len(self._in_flight):
            for _ in range(acked):
                self._in_flight.popleft()

    def _decode(self, frame: Frame) -> Message | None:
        try:
            return decode_message(frame.type, frame.payload)
        except DecodeError:
            self.stats.undecodable += 1
            return None

    # -- encoding ------------------------------------------------------------------------------

    def _checked(self, message: Message) -> tuple[MessageType, bytes]:
        kind, payload = encode_message(message)
        # Encode once now so that an oversized message fails at the caller, not in outbound().
        encode_frame(Frame(type=kind, payload=payload), self.max_message_bytes)
        return kind, payload

    def _encode_sequenced(self, frame: _InFlight) -> bytes:
        return self._encode(
            Frame(type=frame.type, payload=frame.payload, seq=frame.seq, flags=FLAG_SEQUENCED)
        )

    def _encode(self, frame: Frame) -> bytes:
        self._ack_owed = False
        self.stats.frames_sent += 1
        stamped = Frame(
            type=frame.type,
            payload=frame.payload,
            seq=frame.seq,
            ack=self._expected,
            flags=frame.flags | FLAG_ACK_VALID,
        )
        return encode_frame(stamped, self.max_message_bytes)
