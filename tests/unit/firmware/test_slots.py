"""The A/B slot table: its transition table, boot recovery, and atomic persistence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from firmware._errors import SlotTransitionError
from firmware._slots import TRANSITIONS, SlotRecord, SlotStore, SlotTable
from firmware.icc import ReasonCode, SlotState


def _record(data: bytes) -> SlotRecord:
    return SlotRecord(
        model_id="m", version="1.0.0", length=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


def _stage(store: SlotStore, table: SlotTable, slot: int, data: bytes) -> None:
    store.slot_path(slot).write_bytes(data)
    table.apply(slot, "stage", _record(data))


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (s, e)
        for s in SlotState
        for e in ("clear", "stage", "try", "confirm", "fail", "retire", "restore")
        if e not in TRANSITIONS[s]
    ],
    ids=str,
)
def test_every_illegal_transition_names_the_state_and_event(state: SlotState, event: str) -> None:
    table = SlotTable()
    table.slots[0] = SlotRecord(state=state)
    with pytest.raises(SlotTransitionError, match=f"{state.name} cannot '{event}'"):
        table.apply(0, event)


def test_confirm_keeps_the_old_model_as_rollback_target(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    table = store.load()
    _stage(store, table, 0, b"first")
    table.begin_trial(0)
    table.confirm()
    _stage(store, table, 1, b"second")
    table.begin_trial(1)
    table.confirm()
    assert [s.state for s in table.slots] == [SlotState.PREVIOUS, SlotState.ACTIVE]
    assert table.rollback() == 0
    assert [s.state for s in table.slots] == [SlotState.ACTIVE, SlotState.PREVIOUS]


def test_a_trial_found_at_boot_is_reverted(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    table = store.load()
    _stage(store, table, 0, b"good")
    table.begin_trial(0)
    table.confirm()
    _stage(store, table, 1, b"new")
    table.begin_trial(1)
    store.save(table)
    booted = SlotStore(tmp_path).load()
    assert booted.running == 0 and booted.trial is None
    assert booted.slots[1].state == SlotState.FAILED
    assert booted.last_reason == ReasonCode.REVERTED_ON_BOOT


def test_a_slot_whose_file_does_not_match_is_cleared_at_boot(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    table = store.load()
    _stage(store, table, 1, b"staged")
    store.save(table)
    store.slot_path(1).write_bytes(b"tampered")
    assert SlotStore(tmp_path).load().slots[1].state == SlotState.EMPTY


def test_the_table_is_replaced_atomically(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    table = store.load()
    _stage(store, table, 0, b"x")
    store.save(table)
    assert not (tmp_path / "slots.tmp").exists()
    assert SlotTable.from_json((tmp_path / "slots.json").read_text()) == table
