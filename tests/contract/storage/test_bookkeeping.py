"""Outbox, audit log, API tokens and the engine lease on every storage adapter."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa

from service.storage import LeaseLostError, MemoryStorage, NotFoundError, Role, Storage
from service.storage._chain import GENESIS, hash_secret
from tests.contract.storage.conftest import Backend
from tests.contract.storage.factories import T0

TTL = timedelta(seconds=30)


def test_outbox_claims_oldest_first_until_dispatched(storage: Storage) -> None:
    with storage.begin() as uow:
        ids = [uow.outbox.append("offer", {"n": n}, T0) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    with storage.begin() as uow:
        claimed = uow.outbox.claim(limit=3)
        assert [m.payload for m in claimed] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert uow.outbox.mark_dispatched([m.id for m in claimed] + [10_000], T0) == 3
    with storage.begin() as uow:
        rest = uow.outbox.claim(limit=10)
        assert [m.payload["n"] for m in rest] == [3, 4]
        assert all(m.dispatched_at is None and m.kind == "offer" for m in rest)
        assert uow.outbox.pending() == 2
        assert uow.outbox.mark_dispatched([claimed[0].id], T0) == 0  # already dispatched


def _append(storage: Storage, count: int) -> None:
    with storage.begin() as uow:
        for n in range(count):
            uow.audit.append(
                at=T0 + timedelta(seconds=n),
                actor="alice",
                action="rollout.start",
                subject=f"ro-{n}",
                details={"n": n, "note": "ünïcode"},
            )


def test_audit_entries_chain_and_verify(storage: Storage) -> None:
    _append(storage, 5)
    with storage.begin(readonly=True) as uow:
        entries = uow.audit.entries()
        report = uow.audit.verify_chain()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[4].details == {"n": 4, "note": "ünïcode"}
    assert report.ok and report.checked == 5


def test_audit_entries_page_by_seq(storage: Storage) -> None:
    _append(storage, 5)
    with storage.begin(readonly=True) as uow:
        assert [e.seq for e in uow.audit.entries(after_seq=2, limit=2)] == [3, 4]


def test_an_empty_audit_log_verifies(storage: Storage) -> None:
    with storage.begin(readonly=True) as uow:
        report = uow.audit.verify_chain()
    assert report.ok and report.checked == 0


TAMPERING = [
    ("rewritten-entry", lambda b: b.tamper_audit(3, actor="mallory"), 3),
    ("deleted-entry", lambda b: b.delete_audit(2), 2),
    ("deleted-tail-is-undetectable-by-design", lambda b: b.delete_audit(5), None),
]


@pytest.mark.parametrize(
    ("tamper", "first_broken"), [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING]
)
def test_verify_chain_finds_the_first_broken_link(
    backend: Backend, tamper: object, first_broken: int | None
) -> None:
    _append(backend.storage, 5)
    assert callable(tamper)
    tamper(backend)
    with backend.storage.begin(readonly=True) as uow:
        report = uow.audit.verify_chain()
    assert report.first_broken_seq == first_broken
    assert report.ok is (first_broken is None)


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"])
def test_the_database_refuses_to_change_the_audit_log(sql_backend: Backend, statement: str) -> None:
    _append(sql_backend.storage, 2)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        sql_backend.raw(statement)
    with sql_backend.storage.begin(readonly=True) as uow:
        assert uow.audit.verify_chain().checked == 2


def test_tokens_verify_until_revoked(storage: Storage) -> None:
    with storage.begin() as uow:
        issued = uow.tokens.create("ci", Role.OPERATOR, T0)
        other = uow.tokens.create("dash", Role.VIEWER, T0 + timedelta(seconds=1))
    assert issued.secret.startswith("tft_") and len(issued.secret) >= 40
    assert issued.secret not in repr(issued)
    with storage.begin() as uow:
        assert uow.tokens.verify(issued.secret) == issued.token
        assert uow.tokens.verify(issued.secret + "x") is None
        assert uow.tokens.verify("") is None
        uow.tokens.revoke(issued.token.id, T0 + timedelta(hours=1))
        uow.tokens.revoke(issued.token.id, T0 + timedelta(hours=2))  # keeps the first time
        assert uow.tokens.verify(issued.secret) is None
        assert uow.tokens.verify(other.secret) == other.token
        listed = uow.tokens.list()
        with pytest.raises(NotFoundError):
            uow.tokens.revoke("ghost", T0)
    assert [t.name for t in listed] == ["ci", "dash"]
    assert listed[0].revoked_at == T0 + timedelta(hours=1)
    assert listed[0].role is Role.OPERATOR


def test_token_secrets_are_stored_only_as_hashes(backend: Backend) -> None:
    with backend.storage.begin() as uow:
        issued = uow.tokens.create("ci", Role.ADMIN, T0)
    if isinstance(backend.storage, MemoryStorage):
        stored = [digest for _, digest in backend.storage._tables.tokens.values()]
    else:
        stored = [row[0] for row in backend.query("SELECT token_hash FROM api_tokens")]
    assert stored == [hash_secret(issued.secret)]


def test_lease_has_one_holder_until_it_expires(storage: Storage) -> None:
    with storage.begin() as uow:
        first = uow.leases.acquire("engine", "a", T0, TTL)
        assert first is not None and first.epoch == 1 and first.expires_at == T0 + TTL
        assert uow.leases.acquire("engine", "b", T0 + timedelta(seconds=10), TTL) is None
        again = uow.leases.acquire("engine", "a", T0 + timedelta(seconds=10), TTL)
        assert again is not None and again.epoch == 1  # still the same term
        taken = uow.leases.acquire("engine", "b", T0 + timedelta(seconds=40), TTL)
        assert taken is not None and (taken.holder, taken.epoch) == ("b", 2)
        with pytest.raises(LeaseLostError):
            uow.leases.renew("engine", "a", T0 + timedelta(seconds=41), TTL)


def test_lease_renew_and_release(storage: Storage) -> None:
    with storage.begin() as uow:
        uow.leases.acquire("engine", "a", T0, TTL)
        renewed = uow.leases.renew("engine", "a", T0 + timedelta(seconds=20), TTL)
        assert renewed.expires_at == T0 + timedelta(seconds=50)
        with pytest.raises(LeaseLostError):  # expired leases cannot be renewed
            uow.leases.renew("engine", "a", T0 + timedelta(seconds=50), TTL)
        with pytest.raises(LeaseLostError):
            uow.leases.renew("other-lease", "a", T0, TTL)
        uow.leases.acquire("engine", "a", T0 + timedelta(seconds=60), TTL)
        uow.leases.release("engine", "b")  # not b's: no effect
        assert uow.leases.acquire("engine", "b", T0 + timedelta(seconds=61), TTL) is None
        uow.leases.release("engine", "a")
        handed_over = uow.leases.acquire("engine", "b", T0 + timedelta(seconds=61), TTL)
        assert handed_over is not None and handed_over.epoch == 3
