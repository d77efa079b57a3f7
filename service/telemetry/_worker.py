"""The ingest worker: source -> validate -> one database commit -> checkpoint.

Delivery is at least once and the effect exactly once:
- the worker starts each owned partition at the position the database committed (`seek`), and
  seeks back there after any failed commit, so nothing received is lost;
- the commit (rows, rollups, seen marks, dead letters, positions) is one transaction, and
  events at or before a committed position, or whose message id is in the seen set, are
  dropped, so nothing is counted twice;
- the source is checkpointed only after the commit; a failed checkpoint is reported, not
  raised: the database already holds the position the worker resumes from.

Bad telemetry becomes a dead letter (malformed, oversized, unknown-schema, wrong-device,
bad-record) and never blocks the stream.

Several workers share the partitions in one of two ways:
- statically (`partitions=`, the default being all of them): two workers must not own one
  partition at once (if they do, the seen set makes the second commit fail rather than
  double-count);
- by lease (`leases=LeaseConfig(...)`, see `_leases.py`): each worker renews its leases and
  rebalances every ttl / 3, claiming up to its fair share, so adding a worker adds throughput
  and a dead worker's partitions are taken over after its leases expire. Every commit is
  fenced by the leases' epochs: a worker whose partition was taken over gets its commit
  refused (nothing written), drops the partition and seeks nothing; the new owner has sought
  to the committed position. A newly held partition is sought to its committed position
  before it is read.

`run_once` is `commit(receive())`; tests drive the two halves apart to put a takeover between
them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_agent.protocol.telemetry import TelemetryError, message_id
from service.telemetry._build import Accepted, GroupsOf
from service.telemetry._decode import decode_rows
from service.telemetry._errors import (
    LeaseLostError,
    SourceConfigError,
    SourceError,
    TelemetryServiceError,
)
from service.telemetry._leases import Fence, LeaseChange, LeaseConfig, PartitionLeases
from service.telemetry._source import SourceEvent, TelemetrySource
from service.telemetry._store import DeadLetter, TelemetryStore

__all__ = ["InFlightError", "IngestReport", "IngestWorker", "Received"]

DEFAULT_BUCKET_MS = 60_000


def _no_groups(_device_id: str) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class IngestReport:
    received: int = 0
    messages: int = 0  # new batches committed
    records: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    checkpoint_failures: int = 0
    lost: tuple[str, ...] = ()  # partitions the commit was refused on (taken over)


class InFlightError(RuntimeError):
    """The worker's receive/commit steps were called out of turn (a caller's bug)."""


@dataclass(frozen=True)
class Received:
    """One received batch, not yet committed: the events, the feed's last sequences, and the
    lease epochs it was read under (None with static partitions)."""

    events: list[SourceEvent]
    last: dict[str, int | None]
    fence: Fence | None
    at: datetime


class IngestWorker:
    def __init__(
        self,
        source: TelemetrySource,
        store: TelemetryStore,
        *,
        partitions: Sequence[str] | None = None,
        leases: LeaseConfig | None = None,
        batch: int = 5000,
        groups_of: GroupsOf = _no_groups,
        bucket_ms: int = DEFAULT_BUCKET_MS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        known = source.partitions()
        if partitions is not None and leases is not None:
            raise SourceConfigError("give static partitions or leases, not both")
        self._static = list(known if partitions is None else partitions)
        unknown = set(self._static) - set(known)
        if unknown:
            raise SourceConfigError(f"partitions {sorted(unknown)} are not in the feed {known}")
        if not 1 <= batch <= 1_000_000:
            raise SourceConfigError("batch must be in [1, 1000000]")
        self._source, self._store = source, store
        self._batch, self._bucket_ms = batch, bucket_ms
        self._groups_of, self._clock = groups_of, clock
        self.leases: PartitionLeases | None = (
            store.leases(known, leases, clock) if leases is not None else None
        )
        self._committed: dict[str, int] = {}  # owned partitions sought to their positions
        self._noted: dict[str, int | None] = {}
        # The batch received and not yet committed: one at a time, since the next receive
        # reads past it and a commit of later events would move the positions over it.
        self._in_hand: Received | None = None

    @property
    def partitions(self) -> list[str]:
        """The partitions this worker reads now (with leases: those it holds)."""
        return sorted(self.leases.held) if self.leases is not None else self._static

    def _position(self, owned: Sequence[str]) -> dict[str, int]:
        """Committed positions of the owned partitions; a partition not sought since it was
        (re)gained or since a failed commit is read from the database and sought first."""
        fresh = [p for p in owned if p not in self._committed]
        if fresh:
            for partition, sequence in self._store.positions(fresh).items():
                self._source.seek(partition, sequence)
                self._committed[partition] = sequence
        return {p: self._committed[p] for p in owned}

    def rebalance(self) -> LeaseChange | None:
        """With leases and when due (every ttl / 3): renew, rebalance, claim. Partitions that
        changed hands are sought afresh when next read."""
        if self.leases is None or not self.leases.due():
            return None
        change = self.leases.balance()
        for partition in (*change.gained, *change.lost, *change.released):
            self._committed.pop(partition, None)
        return change

    def drain(self) -> int:
        """Run rounds until the source has nothing more; returns how many events were received."""
        received = 0
        while n := self.run_once().received:
            received += n
        return received

    def run_once(self) -> IngestReport:
        """Receive up to `batch` events, commit them, checkpoint; returns what happened."""
        return self.commit(self.receive())

    def receive(self) -> Received:
        """Rebalance when due, then receive up to `batch` events of the owned partitions.

        Raises:
            InFlightError: the batch received last is not committed yet.
        """
        if self._in_hand is not None:
            raise InFlightError("commit the batch received last before receiving another")
        self.rebalance()
        owned = self.partitions
        committed = self._position(owned)
        events = (
            [
                e
                for e in self._source.receive(owned, self._batch)
                if e.sequence > committed.get(e.partition, -1)
            ]
            if owned
            else []
        )
        fence = self.leases.fence(owned) if self.leases is not None else None
        last = {p: self._source.last_sequence(p) for p in owned}
        self._in_hand = Received(events, last, fence, self._clock())
        return self._in_hand

    def commit(self, received: Received) -> IngestReport:
        """Commit the batch `receive` returned in one transaction, then checkpoint the source.

        Raises:
            InFlightError: `received` is not the batch this worker has in hand.
        """
        if received is not self._in_hand:
            raise InFlightError("only the batch received last can be committed, and only once")
        self._in_hand = None
        events, last, now = received.events, received.last, received.at
        if not events:
            if last != self._noted:  # only when the feed moved: idle polls write nothing
                self._store.note_last_sequences(last, now)
                self._noted = last
            return IngestReport()
        accepted, dead = self._classify(events)
        positions: dict[str, int] = {}
        for event in events:
            positions[event.partition] = max(positions.get(event.partition, -1), event.sequence)
        try:
            result = self._store.commit(
                accepted,
                dead,
                positions=positions,
                last_sequences={p: last.get(p) for p in positions},
                groups_of=self._groups_of,
                bucket_ms=self._bucket_ms,
                now=now,
                fence=received.fence,
            )
        except LeaseLostError as exc:
            # The lost partitions' new owner resumes at their committed position: seek nothing
            # there. The batch's other partitions are re-read from theirs.
            assert self.leases is not None and received.fence is not None
            self.leases.forget(received.fence, exc.partitions)
            for partition in positions:
                self._committed.pop(partition, None)
            return IngestReport(received=len(events), lost=tuple(exc.partitions))
        except BaseException:
            for partition in positions:  # re-read the committed positions and seek back
                self._committed.pop(partition, None)
            raise
        for partition, sequence in positions.items():
            if partition in self._committed:
                self._committed[partition] = sequence
        failures = 0
        for partition, sequence in positions.items():
            try:
                self._source.checkpoint(partition, sequence)
            except SourceError:
                failures += 1
        by_reason: dict[str, int] = {}
        for letter in dead:
            by_reason[letter.reason] = by_reason.get(letter.reason, 0) + 1
        return IngestReport(
            received=len(events),
            messages=result.messages,
            records=result.records,
            duplicates=result.duplicates,
            dead_letters=result.dead_letters,
            by_reason=by_reason,
            checkpoint_failures=failures,
        )

    def close(self) -> None:
        """Clean stop: with leases, free them at once (else they expire after their ttl)."""
        if self.leases is not None:
            self.leases.release()
        self._committed.clear()
        self._in_hand = None

    @staticmethod
    def _classify(events: Sequence[SourceEvent]) -> tuple[list[Accepted], list[DeadLetter]]:
        accepted: list[Accepted] = []
        dead: list[DeadLetter] = []
        for event in events:

            def letter(reason: str, detail: str, event: SourceEvent = event) -> DeadLetter:
                return DeadLetter(
                    event.partition,
                    event.sequence,
                    event.device_id,
                    event.message_id,
                    reason,
                    detail,
                    event.body,
                )

            if not event.device_id:
                dead.append(letter("wrong-device", "the hub named no device for this message"))
                continue
            try:
                batch = decode_rows(event.body, device_id=event.device_id)
            except TelemetryError as exc:
                dead.append(letter(exc.reason, exc.detail))
                continue
            except (RecursionError, ValueError, TypeError) as exc:  # beyond the decoder's reasons
                dead.append(letter("malformed", f"undecodable: {type(exc).__name__}"))
                continue
            mid = message_id(batch.device_id, batch.seq)
            if event.message_id is not None and event.message_id != mid:
                dead.append(letter("bad-record", f"message id {event.message_id!r} is not {mid!r}"))
                continue
            accepted.append(
                Accepted(event.partition, event.sequence, event.enqueued_ms, mid, batch)
            )
        return accepted, dead

    def run(self, stop: threading.Event, *, idle_s: float = 0.2, retry_s: float = 2.0) -> None:
        """Loop until `stop` is set: ingest, sleep when idle, back off after a failure; then
        release the leases."""
        try:
            while not stop.is_set():
                try:
                    report = self.run_once()
                except Exception:
                    stop.wait(retry_s)
                    continue
                if report.received == 0:
                    stop.wait(idle_s)
        finally:
            # The database may be away: then the leases expire after their ttl instead.
            with contextlib.suppress(TelemetryServiceError):
                self.close()
