"""SQL repositories for the service's own bookkeeping: outbox, audit log, tokens, leases."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

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
from service.storage._schema import api_tokens, audit_log, engine_lease, outbox
from service.storage._sql_base import chunks, translate_errors, unique, upsert_insert

__all__ = ["SqlAuditLog", "SqlEngineLeases", "SqlOutbox", "SqlTokens"]

EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)
# Key of the transaction-scoped advisory lock that serialises audit appends on PostgreSQL.
AUDIT_LOCK_KEY = 0x7446_6175_6469_74  # "tFaudit"


@translate_errors
class SqlOutbox:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def append(self, kind: str, payload: Mapping[str, Any], now: datetime) -> int:
        statement = (
            sa.insert(outbox)
            .values(kind=kind, payload=dict(payload), created_at=now)
            .returning(outbox.c.id)
        )
        return int(self._conn.execute(statement).scalar_one())

    def append_many(self, messages: Sequence[tuple[str, Mapping[str, Any]]], now: datetime) -> None:
        rows = [{"kind": k, "payload": dict(p), "created_at": now} for k, p in messages]
        if rows:  # one executemany: SQLite and PostgreSQL number them in list order
            self._conn.execute(sa.insert(outbox), rows)

    def claim(self, *, limit: int = 100, now: datetime | None = None) -> list[OutboxMessage]:
        check_limit(limit)
        query = (
            sa.select(outbox)
            .where(outbox.c.dispatched_at.is_(None), outbox.c.parked_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if now is not None:
            query = query.where(
                sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now)
            )
        if self._conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [_message(row) for row in self._conn.execute(query)]

    def _undispatched(self, message_id: int) -> OutboxMessage:
        query = sa.select(outbox).where(outbox.c.id == message_id)
        row = self._conn.execute(query).one_or_none()
        if row is None or row.dispatched_at is not None:
            raise NotFoundError("outbox message", message_id)
        return _message(row)

    def _set(self, message_id: int, **values: Any) -> OutboxMessage:
        statement = (
            sa.update(outbox)
            .where(outbox.c.id == message_id, outbox.c.dispatched_at.is_(None))
            .values(**values)
            .returning(*outbox.c)
        )
        row = self._conn.execute(statement).one_or_none()
        if row is None:
            raise NotFoundError("outbox message", message_id)
        return _message(row)

    def fail(
        self, message_id: int, *, error: str, now: datetime, retry_at: datetime | None
    ) -> OutboxMessage:
        return self._set(
            message_id,
            attempts=outbox.c.attempts + 1,
            last_error=error[:MAX_OUTBOX_ERROR],
            next_attempt_at=retry_at,
            parked_at=now if retry_at is None else None,
        )

    def defer(self, ids: Sequence[int], until: datetime) -> int:
        held = 0
        for batch in chunks(unique(ids)):
            statement = (
                sa.update(outbox)
                .where(
                    outbox.c.id.in_(batch),
                    outbox.c.dispatched_at.is_(None),
                    outbox.c.parked_at.is_(None),
                )
                .values(next_attempt_at=until)
            )
            held += self._conn.execute(statement).rowcount
        return held

    def failing(self, *, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        check_limit(limit)
        query = (
            sa.select(outbox)
            .where(
                outbox.c.id > after_id,
                outbox.c.dispatched_at.is_(None),
                outbox.c.attempts > 0,
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [_message(row) for row in self._conn.execute(query)]

    def get(self, message_id: int) -> OutboxMessage:
        row = self._conn.execute(sa.select(outbox).where(outbox.c.id == message_id)).one_or_none()
        if row is None:
            raise NotFoundError("outbox message", message_id)
        return _message(row)

    def _failed(self, message_id: int) -> OutboxMessage:
        message = self._undispatched(message_id)
        if message.attempts == 0:
            raise ConflictError(f"outbox message {message_id} has not failed")
        return message

    def retry(self, message_id: int, now: datetime) -> OutboxMessage:
        self._failed(message_id)
        return self._set(message_id, attempts=0, next_attempt_at=now, parked_at=None)

    def drop(self, message_id: int, now: datetime) -> OutboxMessage:
        message = self._failed(message_id)
        return self._set(message_id, parked_at=message.parked_at or now, dispatched_at=now)

    def mark_dispatched(self, ids: Sequence[int], now: datetime) -> int:
        marked = 0
        for batch in chunks(unique(ids)):
            statement = (
                sa.update(outbox)
                .where(outbox.c.id.in_(batch), outbox.c.dispatched_at.is_(None))
                .values(dispatched_at=now)
            )
            marked += self._conn.execute(statement).rowcount
        return marked

    def pending(self) -> int:
        query = sa.select(sa.func.count()).where(outbox.c.dispatched_at.is_(None))
        return int(self._conn.execute(query).scalar_one())


def _message(row: sa.Row[Any]) -> OutboxMessage:
    return OutboxMessage(
        row.id,
        row.kind,
        row.payload,
        row.created_at,
        row.dispatched_at,
        row.attempts,
        row.next_attempt_at,
        row.last_error,
        row.parked_at,
    )


def _entry(row: sa.Row[Any]) -> AuditEntry:
    return AuditEntry(
        row.seq, row.at, row.actor, row.action, row.subject, row.details, row.prev_hash, row.hash
    )


@translate_errors
class SqlAuditLog:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def append(
        self, *, at: datetime, actor: str, action: str, subject: str, details: Mapping[str, Any]
    ) -> AuditEntry:
        if self._conn.dialect.name == "postgresql":
            # Appenders on other connections wait here, so each one chains to the true tail.
            # (SQLite units that write already hold the database's single write lock.)
            self._conn.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
        last = self._conn.execute(
            sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
        at = at.astimezone(UTC)
        digest = entry_hash(seq, at, actor, action, subject, details, prev)
        entry = AuditEntry(seq, at, actor, action, subject, dict(details), prev, digest)
        self._conn.execute(
            sa.insert(audit_log).values(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                subject=subject,
                details=dict(details),
                prev_hash=prev,
                hash=digest,
            )
        )
        return entry

    def entries(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        check_limit(limit)
        query = (
            sa.select(audit_log)
            .where(audit_log.c.seq > after_seq)
            .order_by(audit_log.c.seq)
            .limit(limit)
        )
        return [_entry(row) for row in self._conn.execute(query)]

    def verify_chain(self) -> ChainReport:
        return verify_entries(self._all())

    def _all(self) -> Iterator[AuditEntry]:
        after = 0
        while batch := self.entries(after_seq=after, limit=1000):
            yield from batch
            after = batch[-1].seq


def _token(row: sa.Row[Any]) -> ApiToken:
    return ApiToken(row.id, row.name, Role(row.role), row.created_at, row.revoked_at)


@translate_errors
class SqlTokens:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def create(self, name: str, role: Role, now: datetime) -> IssuedToken:
        token_id, secret = new_secret()
        token = ApiToken(token_id, name, Role(role), now)
        self._conn.execute(
            sa.insert(api_tokens).values(
                id=token_id,
                name=name,
                role=token.role.value,
                token_hash=hash_secret(secret),
                created_at=now,
            )
        )
        return IssuedToken(token, secret)

    def verify(self, secret: str) -> ApiToken | None:
        query = sa.select(api_tokens).where(api_tokens.c.token_hash == hash_secret(secret))
        row = self._conn.execute(query).first()
        if row is None or row.revoked_at is not None:
            return None
        return _token(row)

    def revoke(self, token_id: str, now: datetime) -> None:
        exists = self._conn.execute(
            sa.select(api_tokens.c.id).where(api_tokens.c.id == token_id)
        ).first()
        if exists is None:
            raise NotFoundError("token", token_id)
        self._conn.execute(
            sa.update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def list(self) -> builtins.list[ApiToken]:
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
        return [_token(row) for row in self._conn.execute(query)]


def _lease(row: sa.Row[Any]) -> Lease:
    return Lease(row.name, row.holder, row.epoch, row.expires_at)


@translate_errors
class SqlEngineLeases:
    """A row lease: one statement takes it, so it works the same on SQLite and PostgreSQL."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def acquire(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease | None:
        table = engine_lease.c
        insert = upsert_insert(self._conn, engine_lease).values(
            name=name, holder=holder, epoch=1, expires_at=now + ttl
        )
        still_ours = sa.and_(table.holder == insert.excluded.holder, table.expires_at > now)
        statement = insert.on_conflict_do_update(
            index_elements=[table.name],
            set_={
                "holder": insert.excluded.holder,
                "expires_at": insert.excluded.expires_at,
                # A new term of office gets a new epoch (the leader's fencing token).
                "epoch": sa.case((still_ours, table.epoch), else_=table.epoch + 1),
            },
            where=sa.or_(table.holder == insert.excluded.holder, table.expires_at <= now),
        ).returning(*engine_lease.c)
        row = self._conn.execute(statement).first()
        return None if row is None else _lease(row)

    def renew(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease:
        statement = (
            sa.update(engine_lease)
            .where(
                engine_lease.c.name == name,
                engine_lease.c.holder == holder,
                engine_lease.c.expires_at > now,
            )
            .values(expires_at=now + ttl)
            .returning(*engine_lease.c)
        )
        row = self._conn.execute(statement).first()
        if row is None:
            raise LeaseLostError(name, holder)
        return _lease(row)

    def release(self, name: str, holder: str) -> None:
        self._conn.execute(
            sa.update(engine_lease)
            .where(engine_lease.c.name == name, engine_lease.c.holder == holder)
            .values(expires_at=EPOCH_START)
        )
