"""Pure helpers shared by every adapter: the audit hash chain and API token secrets.

Audit chain invariants:
- entry `seq` n (n >= 1) has `prev_hash` equal to the `hash` of entry n-1, and entry 1 has
  `prev_hash == GENESIS`;
- `hash = sha256(canonical JSON of seq, at (UTC, ISO 8601), actor, action, subject, details,
  prev_hash)`, so changing, removing or reordering any entry breaks every link after it;
- seqs are consecutive; a gap is a break at the first missing seq.

The chain alone cannot show that its newest entries were deleted (what is left still links up).
A `ChainHead` kept outside the database (see `_anchor.py`) closes that gap: a chain is whole
only when it reaches the anchored head's seq and its entry there has the anchored hash
(`check_head`).

Token secrets: 256 random bits (`secrets.token_urlsafe(32)`), stored only as their SHA-256. A
slow KDF (scrypt, argon2) protects low-entropy passwords against guessing; a 256-bit random
secret cannot be guessed, so a fast hash is enough and lets `verify` find the token by an
indexed lookup of the hash instead of trying a KDF against every row.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.storage._records import AuditEntry, ChainReport

__all__ = [
    "GENESIS",
    "ChainHead",
    "check_head",
    "entry_hash",
    "hash_secret",
    "new_secret",
    "verify_entries",
]

GENESIS = "0" * 64
SECRET_PREFIX = "tft_"


def entry_hash(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """The hash of one audit entry, over a canonical JSON encoding of all its fields."""
    body = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "prev": prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verify_entries(entries: Iterable[AuditEntry]) -> ChainReport:
    """Walk entries in seq order and report the first broken link (or none)."""
    expected_seq, prev, checked = 1, GENESIS, 0
    for entry in entries:
        if entry.seq != expected_seq:
            return ChainReport(checked, expected_seq, f"entry {expected_seq} is missing")
        if entry.prev_hash != prev:
            return ChainReport(checked, entry.seq, "prev_hash does not match the previous entry")
        recomputed = entry_hash(
            entry.seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.subject,
            entry.details,
            entry.prev_hash,
        )
        if recomputed != entry.hash:
            return ChainReport(checked, entry.seq, "content does not match its hash")
        checked += 1
        expected_seq, prev = entry.seq + 1, entry.hash
    return ChainReport(checked)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest entry a chain is known to have held: its seq and hash."""

    seq: int
    hash: str


def check_head(
    report: ChainReport, head: ChainHead | None, at_head: AuditEntry | None
) -> ChainReport:
    """`report` (of `verify_entries`) also checked against the anchored `head`; `at_head` is the
    chain's entry at `head.seq`, None when there is none. Without an anchor, `report` as is."""
    if not report.ok or head is None or head.seq == 0:
        return report
    if at_head is None or report.checked < head.seq:
        return ChainReport(
            report.checked,
            report.checked + 1,
            f"the chain ends at seq {report.checked} but its anchored head is seq {head.seq}: "
            f"the newest {head.seq - report.checked} entries were deleted",
        )
    if at_head.hash != head.hash:
        return ChainReport(
            report.checked,
            head.seq,
            f"entry {head.seq} does not have the anchored head's hash: the chain was rewritten",
        )
    return report


def new_secret() -> tuple[str, str]:
    """A fresh (token id, secret) pair; the secret carries 256 random bits."""
    return secrets.token_hex(8), SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
