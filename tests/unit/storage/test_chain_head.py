"""The audit chain's anchored head: `check_head` as a table of attacks, and `AnchoredStorage`
over the in-memory storage with a real anchor file."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.storage import AuditEntry, MemoryStorage
from service.storage._anchor import AnchoredStorage, HeadAnchor
from service.storage._chain import GENESIS, ChainHead, check_head, entry_hash, verify_entries

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # only hashed, never compared with a clock


def _chain(count: int, actor: str = "alice") -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = GENESIS
    for seq in range(1, count + 1):
        at = T0 + timedelta(seconds=seq)
        digest = entry_hash(seq, at, actor, "act", f"s{seq}", {}, prev)
        entries.append(AuditEntry(seq, at, actor, "act", f"s{seq}", {}, prev, digest))
        prev = digest
    return entries


FIVE = _chain(5)
HEAD = ChainHead(5, FIVE[-1].hash)


def _rewritten_tail(entries: list[AuditEntry]) -> list[AuditEntry]:
    """Cut after entry 3, then append two new entries: a chain that links up to seq 5."""
    tail = []
    prev = entries[2].hash
    for seq in (4, 5):
        digest = entry_hash(seq, T0, "mallory", "act", "x", {}, prev)
        tail.append(AuditEntry(seq, T0, "mallory", "act", "x", {}, prev, digest))
        prev = digest
    return [*entries[:3], *tail]


ROWS: list[tuple[str, Any, ChainHead | None, int | None]] = [
    ("intact-at-the-head", lambda e: e, HEAD, None),
    ("grew-past-the-head", lambda e: e, ChainHead(3, FIVE[2].hash), None),
    ("no-anchor-yet", lambda e: e, None, None),
    ("newest-entry-deleted", lambda e: e[:4], HEAD, 5),
    ("newest-three-deleted", lambda e: e[:2], HEAD, 3),
    ("every-entry-deleted", lambda e: [], HEAD, 1),
    ("cut-and-regrown", _rewritten_tail, HEAD, 5),
    ("broken-link-reported-first", lambda e: [e[0], *e[2:]], HEAD, 2),
    ("middle-entry-rehashed", lambda e: [*e[:2], replace(e[2], actor="m"), *e[3:]], HEAD, 3),
]


@pytest.mark.parametrize(
    ("attack", "head", "first_broken"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_check_head(attack: Any, head: ChainHead | None, first_broken: int | None) -> None:
    entries = attack(list(FIVE))
    at_head = next((e for e in entries if head is not None and e.seq == head.seq), None)
    report = check_head(verify_entries(entries), head, at_head)
    assert report.first_broken_seq == first_broken, report


def _append(storage: AnchoredStorage, n: int) -> None:
    with storage.begin() as uow:
        uow.audit.append(at=T0, actor="alice", action="act", subject=f"s{n}", details={})


def test_committed_appends_move_the_anchor_and_rollbacks_do_not(tmp_path: Path) -> None:
    anchor = HeadAnchor(tmp_path / "audit-anchor")
    storage = AnchoredStorage(MemoryStorage(), anchor)
    assert storage.adopt() == ChainHead(0, GENESIS)
    for n in range(3):
        _append(storage, n)
    head = anchor.read()
    assert head is not None and head.seq == 3
    assert stat.S_IMODE(os.stat(anchor.path).st_mode) == 0o600
    with pytest.raises(RuntimeError), storage.begin() as uow:
        uow.audit.append(at=T0, actor="alice", action="act", subject="x", details={})
        raise RuntimeError("the change fails")
    assert anchor.read() == head
    with storage.begin(readonly=True) as uow:
        assert uow.audit.verify_chain().ok


def test_an_older_head_never_replaces_a_newer_one(tmp_path: Path) -> None:
    anchor = HeadAnchor(tmp_path / "audit-anchor")
    anchor.advance(ChainHead(7, "a" * 64))
    anchor.advance(ChainHead(6, "b" * 64))  # a unit that committed earlier, finishing later
    assert anchor.read() == ChainHead(7, "a" * 64)


def test_adopt_anchors_an_existing_chain_once(tmp_path: Path) -> None:
    inner = MemoryStorage()
    with inner.begin() as uow:
        for n in range(4):
            uow.audit.append(at=T0, actor="alice", action="act", subject=f"s{n}", details={})
    storage = AnchoredStorage(inner, HeadAnchor(tmp_path / "audit-anchor"))
    adopted = storage.adopt()
    assert adopted is not None and adopted.seq == 4
    assert storage.adopt() is None  # an anchor exists: never re-anchored from the database


@pytest.mark.parametrize(
    "content", ["not json", '{"seq": "5"}', '{"seq": -1, "hash": "x"}'], ids=str
)
def test_an_unreadable_anchor_fails_verify(tmp_path: Path, content: str) -> None:
    storage = AnchoredStorage(MemoryStorage(), HeadAnchor(tmp_path / "audit-anchor"))
    storage.adopt()
    _append(storage, 1)
    storage.anchor.path.write_text(content)
    with storage.begin(readonly=True) as uow:
        report = uow.audit.verify_chain()
    assert not report.ok and "audit anchor" in (report.reason or "")
    _append(storage, 2)  # appends go on; the anchor is left for verify to report
    assert storage.anchor.path.read_text() == content
