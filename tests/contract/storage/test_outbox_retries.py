"""A failing outbox message on every storage adapter: attempts, back-off, park, retry, drop."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.storage import MAX_OUTBOX_ERROR, ConflictError, NotFoundError, Storage
from tests.contract.storage.factories import T0

LATER = T0 + timedelta(seconds=30)


def _queue(storage: Storage, count: int) -> list[int]:
    with storage.begin() as uow:
        return [uow.outbox.append("OfferRelease", {"n": n}, T0) for n in range(count)]


def test_a_failed_message_backs_off_and_keeps_its_error(storage: Storage) -> None:
    first, second = _queue(storage, 2)
    with storage.begin() as uow:
        failed = uow.outbox.fail(first, error="hub: 503 " + "x" * 5000, now=T0, retry_at=LATER)
    assert failed.attempts == 1 and failed.state == "retrying"
    assert failed.last_error is not None and len(failed.last_error) == MAX_OUTBOX_ERROR
    with storage.begin() as uow:
        assert [m.id for m in uow.outbox.claim(now=T0)] == [second]
        assert [m.id for m in uow.outbox.claim(now=LATER)] == [first, second]
        assert [m.id for m in uow.outbox.failing()] == [first]
        again = uow.outbox.fail(first, error="hub: 503", now=LATER, retry_at=LATER)
    assert again.attempts == 2 and again.next_attempt_at == LATER
    with storage.begin(readonly=True) as uow:
        stored = uow.outbox.get(first)
    assert (stored.attempts, stored.last_error, stored.next_attempt_at) == (2, "hub: 503", LATER)


def test_a_parked_message_is_never_claimed_until_retried(storage: Storage) -> None:
    (message_id,) = _queue(storage, 1)
    with storage.begin() as uow:
        parked = uow.outbox.fail(message_id, error="refused", now=T0, retry_at=None)
    assert parked.state == "parked" and parked.parked_at == T0
    with storage.begin() as uow:
        assert uow.outbox.claim(now=LATER) == [] and uow.outbox.claim() == []
        assert [m.state for m in uow.outbox.failing()] == ["parked"]
        assert uow.outbox.defer([message_id], LATER) == 0  # parked stays parked
        retried = uow.outbox.retry(message_id, LATER)
    assert (retried.state, retried.attempts, retried.last_error) == ("queued", 0, "refused")
    with storage.begin() as uow:
        assert [m.id for m in uow.outbox.claim(now=LATER)] == [message_id]


def test_a_dropped_message_is_done_and_never_runs(storage: Storage) -> None:
    (message_id,) = _queue(storage, 1)
    with storage.begin() as uow:
        uow.outbox.fail(message_id, error="refused", now=T0, retry_at=None)
        dropped = uow.outbox.drop(message_id, LATER)
    assert dropped.state == "dropped" and dropped.dispatched_at == LATER
    with storage.begin() as uow:
        assert uow.outbox.claim() == [] and uow.outbox.failing() == []
        assert uow.outbox.pending() == 0
        assert uow.outbox.get(message_id).state == "dropped"
        with pytest.raises(NotFoundError):
            uow.outbox.retry(message_id, LATER)


def test_deferred_messages_wait_without_an_attempt(storage: Storage) -> None:
    ids = _queue(storage, 3)
    with storage.begin() as uow:
        assert uow.outbox.defer(ids[1:], LATER) == 2
        assert [m.id for m in uow.outbox.claim(now=T0)] == ids[:1]
        assert [m.id for m in uow.outbox.claim(now=LATER)] == ids
        assert uow.outbox.failing() == []
        assert all(m.attempts == 0 for m in uow.outbox.claim())


@pytest.mark.parametrize("action", ["retry", "drop"], ids=["retry", "drop"])
def test_only_a_failed_message_can_be_retried_or_dropped(storage: Storage, action: str) -> None:
    (message_id,) = _queue(storage, 1)
    with storage.begin() as uow:
        with pytest.raises(ConflictError):
            getattr(uow.outbox, action)(message_id, LATER)
        with pytest.raises(NotFoundError):
            getattr(uow.outbox, action)(10_000, LATER)
        with pytest.raises(NotFoundError):
            uow.outbox.fail(10_000, error="x", now=T0, retry_at=None)
