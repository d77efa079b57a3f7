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
bad-record) and never blocks the stream. Several workers split the partitions statically
(`partitions=`); two workers must not own one partition at once (if they do, the seen set
makes the second commit fail rather than double-count).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_agent.protocol.telemetry import TelemetryError, message_id
from service.telemetry._build import Accepted, GroupsOf
from service.telemetry._decode import decode_rows
from service.telemetry._errors import SourceConfigError, SourceError
from service.telemetry._source import SourceEvent, TelemetrySource
from service.telemetry._store import DeadLetter, TelemetryStore

__all__ = ["IngestReport", "IngestWorker"]

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


class IngestWorker:
    def __init__(
        self,
        source: TelemetrySource,
        store: TelemetryStore,
        *,
        partitions: Sequence[str] | None = None,
        batch: int = 5000,
        groups_of: GroupsOf = _no_groups,
        bucket_ms: int = DEFAULT_BUCKET_MS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        known = source.partitions()
        self.partitions = list(known if partitions is None else partitions)
        unknown = set(self.partitions) - set(known)
        if unknown:
            raise SourceConfigError(f"partitions {sorted(unknown)} are not in the feed {known}")
        if not 1 <= batch <= 1_000_000:
            raise SourceConfigError("batch must be in [1, 1000000]")
        self._source, self._store = source, store
        self._batch, self._bucket_ms = batch, bucket_ms
        self._groups_of, self._clock = groups_of, clock
        self._committed: dict[str, int] | None = None
        self._noted: dict[str, int | None] = {}

    def _position(self) -> dict[str, int]:
        if self._committed is None:
            self._committed = self._store.positions(self.partitions)
            for partition, sequence in self._committed.items():
                self._source.seek(partition, sequence)
        return self._committed

    def drain(self) -> int:
        """Run rounds until the source has nothing more; returns how many events were received."""
        received = 0
        while n := self.run_once().received:
            received += n
        return received

    def run_once(self) -> IngestReport:
        """Receive up to `batch` events, commit them, checkpoint; returns what happened."""
        committed = self._position()
        events = [
            e
            for e in self._source.receive(self.partitions, self._batch)
            if e.sequence > committed.get(e.partition, -1)
        ]
        now = self._clock()
        last = {p: self._source.last_sequence(p) for p in self.partitions}
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
            )
        except BaseException:
            self._committed = None  # re-read the committed positions and seek back to them
            raise
        committed.update(positions)
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
        """Loop until `stop` is set: ingest, sleep when idle, back off after a failure."""
        while not stop.is_set():
            try:
                report = self.run_once()
            except Exception:
                stop.wait(retry_s)
                continue
            if report.received == 0:
                stop.wait(idle_s)
