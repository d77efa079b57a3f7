"""The audit chain's head, anchored outside the database.

```python
storage = AnchoredStorage(open_storage(url), HeadAnchor(DATA / "audit-anchor"))
storage.adopt()                # first start (or an upgrade): anchor the current head
with storage.begin() as uow:   # a unit that appends moves the anchor once it has committed
    uow.audit.append(...)
storage.begin(readonly=True).__enter__().audit.verify_chain()  # also checks the anchored head
```

A hash chain whose newest entries were deleted still links up, so `verify_entries` alone cannot
see the deletion. The anchor file holds the newest committed entry's seq and hash; `verify_chain`
fails unless the chain reaches that seq with that hash (`check_head`).

Invariants:
- the anchor moves only after the commit that made its entry durable (a rolled-back unit never
  moves it) and never backwards (concurrent units may finish in any order);
- it moves only while the chain still holds the anchored entry: a chain that was cut and then
  grew past the anchored seq again does not carry the anchor along (the cut stays visible);
- a crash between a commit and the anchor write leaves the anchor one unit behind; those
  entries are covered from the next append on.

Limit: whoever can write both the database and the anchor file can rewrite both. Keep the
anchor where the database's writers cannot (TINYFLEET_AUDIT_ANCHOR, e.g. another volume).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from service.storage._chain import GENESIS, ChainHead, check_head
from service.storage._port import AuditLog, Storage, UnitOfWork
from service.storage._records import AuditEntry, ChainReport

__all__ = ["AnchoredStorage", "HeadAnchor"]

_log = logging.getLogger("tinyfleet.audit")


class AnchorUnreadable(Exception):
    pass


class HeadAnchor:
    """One JSON file `{"seq": N, "hash": "..."}`, replaced atomically, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> ChainHead | None:
        """The anchored head; None when there is no anchor. Raises AnchorUnreadable."""
        try:
            data = json.loads(self.path.read_text())
            seq, digest = data["seq"], data["hash"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise AnchorUnreadable(f"the audit anchor {self.path} is unreadable: {exc}") from exc
        if not isinstance(seq, int) or seq < 0 or not isinstance(digest, str):
            raise AnchorUnreadable(f"the audit anchor {self.path} is malformed")
        return ChainHead(seq, digest)

    def advance(self, head: ChainHead) -> None:
        """Write `head` unless the anchor already holds a newer one."""
        with self._lock:
            try:
                current = self.read()
            except AnchorUnreadable:
                _log.error("%s is unreadable; left as is for `audit verify` to report", self.path)
                return
            if current is not None and current.seq >= head.seq:
                return
            self._write(head)

    def _write(self, head: ChainHead) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"seq": head.seq, "hash": head.hash}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _entry_at(audit: AuditLog, seq: int) -> AuditEntry | None:
    found = audit.entries(after_seq=seq - 1, limit=1) if seq > 0 else []
    return found[0] if found and found[0].seq == seq else None


class _AnchoredAudit:
    def __init__(self, inner: AuditLog, anchor: HeadAnchor) -> None:
        self._inner = inner
        self._anchor = anchor
        self.newest: AuditEntry | None = None
        self._chain_holds_anchor: bool | None = None

    def append(
        self, *, at: datetime, actor: str, action: str, subject: str, details: Mapping[str, Any]
    ) -> AuditEntry:
        entry = self._inner.append(
            at=at, actor=actor, action=action, subject=subject, details=details
        )
        if self._chain_holds_anchor is None:
            self._chain_holds_anchor = self._holds_anchor(entry)
        if self._chain_holds_anchor:
            self.newest = entry
        return entry

    def _holds_anchor(self, appended: AuditEntry) -> bool:
        try:
            head = self._anchor.read()
        except AnchorUnreadable:
            return False
        if head is None or head.seq == 0:
            return True
        at_head = _entry_at(self._inner, head.seq) if head.seq < appended.seq else None
        if at_head is not None and at_head.hash == head.hash:
            return True
        _log.error(
            "the audit chain no longer holds its anchored head (seq %d); the anchor stays there "
            "so that `audit verify` reports it",
            head.seq,
        )
        return False

    def entries(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        return self._inner.entries(after_seq=after_seq, limit=limit)

    def verify_chain(self) -> ChainReport:
        report = self._inner.verify_chain()
        try:
            head = self._anchor.read()
        except AnchorUnreadable as exc:
            if not report.ok:
                return report
            return ChainReport(report.checked, report.checked + 1, str(exc))
        at_head = _entry_at(self._inner, head.seq) if head is not None else None
        return check_head(report, head, at_head)


class _AnchoredUnit:
    def __init__(self, inner: UnitOfWork, anchor: HeadAnchor) -> None:
        self._inner = inner
        self.audit = _AnchoredAudit(inner.audit, anchor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class AnchoredStorage:
    """A `Storage` whose audit log keeps its head anchored in a `HeadAnchor`."""

    def __init__(self, inner: Storage, anchor: HeadAnchor) -> None:
        self.inner = inner
        self.anchor = anchor

    def adopt(self) -> ChainHead | None:
        """Anchor the current head when there is no anchor yet; returns what was anchored."""
        if self.anchor.path.exists():
            return None
        with self.inner.begin(readonly=True) as uow:
            last: AuditEntry | None = None
            after = 0
            while batch := uow.audit.entries(after_seq=after, limit=1000):
                last, after = batch[-1], batch[-1].seq
        head = ChainHead(last.seq, last.hash) if last is not None else ChainHead(0, GENESIS)
        self.anchor.advance(head)
        return head

    @contextmanager
    def begin(self, *, readonly: bool = False) -> Iterator[UnitOfWork]:
        with self.inner.begin(readonly=readonly) as uow:
            unit = _AnchoredUnit(uow, self.anchor)
            yield unit
        newest = unit.audit.newest
        if newest is not None:  # committed: the inner unit ended without an exception
            self.anchor.advance(ChainHead(newest.seq, newest.hash))

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
