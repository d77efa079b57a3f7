"""The A/B slot table of one core and its crash-safe store.

The table is a state machine per slot, written as a transition table; the store persists it
with temp file + fsync + rename (+ directory fsync), so a power cut at any instant leaves
either the old or the new table on disk, never a mix.

Invariants:
 * At most one slot is ACTIVE (the confirmed model) and at most one is TRIAL.
 * Bytes are only ever written into a slot that is EMPTY in the persisted table; the file of an
   ACTIVE, TRIAL or PREVIOUS slot is never touched. So the confirmed model survives any crash.
 * A slot is STAGED only after its file is complete, fsynced, renamed into place and its sha256
   matched the declared one.
 * At boot a TRIAL slot becomes FAILED (the trial was never confirmed): the core boots its
   confirmed model, so a crash during a trial reverts.
 * At boot a non-empty slot whose file is missing or does not hash to its recorded sha256 is
   cleared (or, for the active slot, marked FAILED and the core reports STORAGE_ERROR).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

from firmware._errors import SlotTransitionError, StorageError
from firmware.faults import FaultHooks
from firmware.icc import ReasonCode, SlotState

__all__ = ["SLOT_COUNT", "SlotRecord", "SlotStore", "SlotTable"]

SLOT_COUNT = 2
E, S, T, A, P, F = (
    SlotState.EMPTY,
    SlotState.STAGED,
    SlotState.TRIAL,
    SlotState.ACTIVE,
    SlotState.PREVIOUS,
    SlotState.FAILED,
)

# state -> {event: next state}. Everything that changes a slot's state goes through this table.
TRANSITIONS: dict[SlotState, dict[str, SlotState]] = {
    E: {"clear": E, "stage": S},
    S: {"clear": E, "try": T},
    T: {"confirm": A, "fail": F},
    A: {"retire": P},
    P: {"clear": E, "restore": A},
    F: {"clear": E},
}


@dataclass(frozen=True)
class SlotRecord:
    """What the table knows about one slot."""

    state: SlotState = SlotState.EMPTY
    model_id: str = ""
    version: str = ""
    length: int = 0
    sha256: str = ""
    arena_bytes: int = 0
    input_dtype: str = ""
    input_shape: tuple[int, ...] = ()
    output_dtype: str = ""
    output_shape: tuple[int, ...] = ()
    operators: tuple[str, ...] = ()
    min_firmware_version: str = "0.0.0"
    # Self-test vectors: (input bytes hex, expected bytes hex, tolerance)
    vectors: tuple[tuple[str, str, int], ...] = ()


@dataclass
class SlotTable:
    slots: list[SlotRecord] = field(
        default_factory=lambda: [SlotRecord() for _ in range(SLOT_COUNT)]
    )
    active: int | None = None
    trial: int | None = None
    last_reason: ReasonCode = ReasonCode.OK

    @property
    def running(self) -> int | None:
        """The slot whose model runs now: the trial if there is one, else the confirmed one."""
        return self.trial if self.trial is not None else self.active

    @property
    def previous(self) -> int | None:
        return next((i for i, s in enumerate(self.slots) if s.state == SlotState.PREVIOUS), None)

    def apply(self, slot: int, event: str, record: SlotRecord | None = None) -> None:
        """Move `slot` by `event`.

        Raises:
            SlotTransitionError: `event` is not allowed in the slot's state (names both).
        """
        current = self.slots[slot]
        target = TRANSITIONS[current.state].get(event)
        if target is None:
            raise SlotTransitionError(f"slot {slot} in state {current.state.name} cannot {event!r}")
        base = record if record is not None else current
        self.slots[slot] = SlotRecord() if target == E else replace(base, state=target)

    def inactive_slot(self) -> int | None:
        """The slot a new model may be received into (never the running or confirmed one)."""
        busy = {self.active, self.trial}
        free = [i for i in range(SLOT_COUNT) if i not in busy]
        return free[0] if free else None

    def begin_trial(self, slot: int) -> None:
        self.apply(slot, "try")
        self.trial = slot

    def confirm(self) -> int:
        assert self.trial is not None
        slot, old = self.trial, self.active
        for i in range(SLOT_COUNT):
            if i not in (slot, old) and self.slots[i].state == SlotState.PREVIOUS:
                self.apply(i, "clear")
        if old is not None:
            self.apply(old, "retire")
        self.apply(slot, "confirm")
        self.active, self.trial = slot, None
        return slot

    def fail_trial(self, reason: ReasonCode) -> None:
        assert self.trial is not None
        self.apply(self.trial, "fail")
        self.trial, self.last_reason = None, reason

    def rollback(self) -> int:
        """Make the PREVIOUS slot active again (the current one becomes PREVIOUS)."""
        target = self.previous
        if target is None or self.trial is not None:
            raise SlotTransitionError("no previous model to roll back to")
        if self.active is not None:
            self.apply(self.active, "retire")
        self.apply(target, "restore")
        self.active = target
        return target

    def to_json(self) -> str:
        doc = {
            "slots": [{**asdict(s), "state": s.state.name} for s in self.slots],
            "active": self.active,
            "trial": self.trial,
            "lastReason": self.last_reason.name,
        }
        return json.dumps(doc, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SlotTable:
        doc = json.loads(text)
        slots = []
        for raw in doc["slots"]:
            raw = dict(raw)
            raw["state"] = SlotState[raw["state"]]
            for key in ("input_shape", "output_shape", "operators"):
                raw[key] = tuple(raw[key])
            raw["vectors"] = tuple(tuple(v) for v in raw["vectors"])
            slots.append(SlotRecord(**raw))
        return cls(slots, doc["active"], doc["trial"], ReasonCode[doc["lastReason"]])


class SlotStore:
    """The slot table and slot files of one core, under `directory`."""

    def __init__(self, directory: Path, hooks: FaultHooks | None = None) -> None:
        self.directory = directory
        self.hooks = hooks or FaultHooks()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {directory}: {exc.strerror}") from exc

    @property
    def _table_path(self) -> Path:
        return self.directory / "slots.json"

    def slot_path(self, slot: int) -> Path:
        return self.directory / f"slot-{slot}.tflite"

    def partial_path(self, slot: int) -> Path:
        return self.directory / f"slot-{slot}.partial"

    def load(self) -> SlotTable:
        """The persisted table, recovered for boot (see the module invariants)."""
        try:
            table = SlotTable.from_json(self._table_path.read_text())
        except FileNotFoundError:
            return SlotTable()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"slot table {self._table_path} is unreadable: {exc}") from exc
        changed = False
        if table.trial is not None:
            table.fail_trial(ReasonCode.REVERTED_ON_BOOT)
            changed = True
        for slot, record in enumerate(table.slots):
            if record.state in (SlotState.EMPTY, SlotState.FAILED) or self._intact(slot, record):
                continue
            if slot == table.active:
                table.slots[slot] = replace(record, state=SlotState.FAILED)
                table.active, table.last_reason = None, ReasonCode.STORAGE_ERROR
            else:
                table.slots[slot] = SlotRecord()
            changed = True
        if changed:
            self.save(table)
        return table

    def save(self, table: SlotTable) -> None:
        """Persist atomically: temp file, fsync, rename, directory fsync."""
        temp = self._table_path.with_suffix(".tmp")
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(table.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            self.hooks.point("table:temp-written")
            os.replace(temp, self._table_path)
            self._sync_dir()
        except OSError as exc:
            raise StorageError(f"cannot save slot table: {exc.strerror}") from exc

    def open_partial(self, slot: int) -> IO[bytes]:
        try:
            return open(self.partial_path(slot), "wb")
        except OSError as exc:
            raise StorageError(f"cannot open slot {slot}: {exc.strerror}") from exc

    def commit_partial(self, slot: int, handle: IO[bytes]) -> None:
        """fsync the received bytes and move them into place as the slot's file."""
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(self.partial_path(slot), self.slot_path(slot))
            self._sync_dir()
        except OSError as exc:
            raise StorageError(f"cannot commit slot {slot}: {exc.strerror}") from exc

    def discard_partial(self, slot: int, handle: IO[bytes] | None) -> None:
        if handle is not None:
            handle.close()
        self.partial_path(slot).unlink(missing_ok=True)

    def read(self, slot: int) -> bytes:
        try:
            return self.slot_path(slot).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read slot {slot}: {exc.strerror}") from exc

    def _intact(self, slot: int, record: SlotRecord) -> bool:
        try:
            data = self.slot_path(slot).read_bytes()
        except OSError:
            return False
        return len(data) == record.length and hashlib.sha256(data).hexdigest() == record.sha256

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
