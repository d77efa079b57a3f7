"""In-memory repositories for the service's bookkeeping: outbox, audit log, tokens, leases.

Part of `MemoryStorage` (see `_memory.py`); they work on its tables inside its unit of work.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from service.storage._chain import GENESIS, entry_hash, hash_secret, new_secret, verify_entries
from service.storage._errors import ConflictError, LeaseLostError, NotFoundError
from service.storage._port import MAX_OUTBOX_ERROR, check_limit
from service.storage._records import (
    ApiToken,
    AuditEntry,
    ChainReport,
    IssuedToken,
    Lease,
    OutboxMessage,
    Role,
)

if TYPE_CHECKING:
    from service.storage._memory import _Tables

__all__ = ["MemoryAuditLog", "MemoryEngineLeases", "MemoryOutbox", "MemoryTokens"]

EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)


class MemoryOutbox:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def append(self, kind: str, payload: Mapping[str, Any], now: datetime) -> int:
        message_id = self._t.outbox_next
        self._t.outbox_next += 1
        self._t.outbox[message_id] = OutboxMessage(message_id, kind, dict(payload), now)
        return message_id

    def append_many(self, messages: Sequence[tuple[str, Mapping[str, Any]]], now: datetime) -> None:
        for kind, payload in messages:
            self.append(kind, payload, now)

    def claim(
        self, *, limit: int = 100, now: datetime | None = None
    ) -> builtins.list[OutboxMessage]:
        check_limit(limit)
        waiting = (
            m
            for m in self._t.outbox.values()
            if m.dispatched_at is None
            and m.parked_at is None
            and (now is None or m.next_attempt_at is None or m.next_attempt_at <= now)
        )
        return sorted(waiting, key=lambda m: m.id)[:limit]

    def _undispatched(self, message_id: int) -> OutboxMessage:
        message = self._t.outbox.get(message_id)
        if message is None or message.dispatched_at is not None:
            raise NotFoundError("outbox message", message_id)
        return message

    def fail(
        self, message_id: int, *, error: str, now: datetime, retry_at: datetime | None
    ) -> OutboxMessage:
        message = self._undispatched(message_id)
        failed = replace(
            message,
            attempts=message.attempts + 1,
            last_error=error[:MAX_OUTBOX_ERROR],
            next_attempt_at=retry_at,
            parked_at=now if retry_at is None else None,
        )
        self._t.outbox[message_id] = failed
        return failed

    def defer(self, ids: Sequence[int], until: datetime) -> int:
        held = 0
        for message_id in dict.fromkeys(ids):
            message = self._t.outbox.get(message_id)
            if message is not None and message.dispatched_at is None and message.parked_at is None:
                self._t.outbox[message_id] = replace(message, next_attempt_at=until)
                held += 1
        return held

    def failing(self, *, after_id: int = 0, limit: int = 100) -> builtins.list[OutboxMessage]:
        check_limit(limit)
        found = (
            m
            for m in self._t.outbox.values()
            if m.id > after_id and m.dispatched_at is None and m.attempts > 0
        )
        return sorted(found, key=lambda m: m.id)[:limit]

    def get(self, message_id: int) -> OutboxMessage:
        message = self._t.outbox.get(message_id)
        if message is None:
            raise NotFoundError("outbox message", message_id)
        return message

    def _failed(self, message_id: int) -> OutboxMessage:
        message = self._undispatched(message_id)
        if message.attempts == 0:
            raise ConflictError(f"outbox message {message_id} has not failed")
        return message

    def retry(self, message_id: int, now: datetime) -> OutboxMessage:
        message = replace(self._failed(message_id), attempts=0, next_attempt_at=now, parked_at=None)
        self._t.outbox[message_id] = message
        return message

    def drop(self, message_id: int, now: datetime) -> OutboxMessage:
        message = self._failed(message_id)
        message = replace(message, parked_at=message.parked_at or now, dispatched_at=now)
        self._t.outbox[message_id] = message
        return message

    def mark_dispatched(self, ids: Sequence[int], now: datetime) -> int:
        marked = 0
        for message_id in dict.fromkeys(ids):
            message = self._t.outbox.get(message_id)
            if message is not None and message.dispatched_at is None:
                self._t.outbox[message_id] = replace(message, dispatched_at=now)
                marked += 1
        return marked

    def pending(self) -> int:
        return sum(1 for m in self._t.outbox.values() if m.dispatched_at is None)


class MemoryAuditLog:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def append(
        self, *, at: datetime, actor: str, action: str, subject: str, details: Mapping[str, Any]
    ) -> AuditEntry:
        seq = len(self._t.audit) + 1
        prev = self._t.audit[-1].hash if self._t.audit else GENESIS
        at = at.astimezone(UTC)
        digest = entry_hash(seq, at, actor, action, subject, details, prev)
        entry = AuditEntry(seq, at, actor, action, subject, dict(details), prev, digest)
        self._t.audit.append(entry)
        return entry

    def entries(self, *, after_seq: int = 0, limit: int = 100) -> builtins.list[AuditEntry]:
        check_limit(limit)
        return [e for e in self._t.audit if e.seq > after_seq][:limit]

    def verify_chain(self) -> ChainReport:
        return verify_entries(self._t.audit)


class MemoryTokens:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def create(self, name: str, role: Role, now: datetime) -> IssuedToken:
        token_id, secret = new_secret()
        token = ApiToken(token_id, name, Role(role), now)
        self._t.tokens[token_id] = (token, hash_secret(secret))
        return IssuedToken(token, secret)

    def verify(self, secret: str) -> ApiToken | None:
        digest = hash_secret(secret)
        for token, stored in self._t.tokens.values():
            if stored == digest:
                return token if token.revoked_at is None else None
        return None

    def revoke(self, token_id: str, now: datetime) -> None:
        if token_id not in self._t.tokens:
            raise NotFoundError("token", token_id)
        token, digest = self._t.tokens[token_id]
        if token.revoked_at is None:
            self._t.tokens[token_id] = (replace(token, revoked_at=now), digest)

    def list(self) -> builtins.list[ApiToken]:
        return sorted((t for t, _ in self._t.tokens.values()), key=lambda t: (t.created_at, t.id))


class MemoryEngineLeases:
    def __init__(self, t: _Tables) -> None:
        self._t = t

    def acquire(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease | None:
        current = self._t.leases.get(name)
        if current is None:
            lease = Lease(name, holder, 1, now + ttl)
        elif current.holder == holder and current.expires_at > now:
            lease = replace(current, expires_at=now + ttl)
        elif current.expires_at <= now:
            lease = Lease(name, holder, current.epoch + 1, now + ttl)
        else:
            return None
        self._t.leases[name] = lease
        return lease

    def renew(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease:
        current = self._t.leases.get(name)
        if current is None or current.holder != holder or current.expires_at <= now:
            raise LeaseLostError(name, holder)
        lease = replace(current, expires_at=now + ttl)
        self._t.leases[name] = lease
        return lease

    def release(self, name: str, holder: str) -> None:
        current = self._t.leases.get(name)
        if current is not None and current.holder == holder:
            self._t.leases[name] = replace(current, expires_at=EPOCH_START)
