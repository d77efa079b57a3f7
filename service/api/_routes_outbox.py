"""The outbox's failing messages: the ones backing off and the parked ones, with their reason;
an admin retries a parked message (after fixing its cause) or drops it. Both are audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from service.api._audit import record
from service.api._deps import MAX_LIMIT, Context, require
from service.api._problems import PROBLEM_RESPONSES, problem_responses
from service.api._schemas import Items
from service.storage import ApiToken, OutboxMessage, Role

__all__ = ["router"]

router = APIRouter(prefix="/outbox", tags=["outbox"], responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Admin = Annotated[ApiToken, Depends(require(Role.ADMIN))]
MessageId = Annotated[int, Path(ge=1, le=2**63 - 1, description="an outbox message id")]
State = Literal["retrying", "parked", "queued", "dispatched", "dropped"]


class OutboxMessageOut(BaseModel):
    id: int
    kind: str
    state: State
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    parked_at: datetime | None
    created_at: datetime
    dispatched_at: datetime | None
    payload: dict[str, Any]


def _out(message: OutboxMessage) -> OutboxMessageOut:
    return OutboxMessageOut(
        id=message.id,
        kind=message.kind,
        state=message.state,  # type: ignore[arg-type]
        attempts=message.attempts,
        last_error=message.last_error,
        next_attempt_at=message.next_attempt_at,
        parked_at=message.parked_at,
        created_at=message.created_at,
        dispatched_at=message.dispatched_at,
        payload=dict(message.payload),
    )


@router.get("", response_model=Items[OutboxMessageOut])
def failing_messages(
    _token: Viewer,
    context: Context,
    state: Annotated[Literal["retrying", "parked"] | None, Query()] = None,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Items[OutboxMessageOut]:
    """Undelivered messages that failed at least once, oldest first (`state` narrows)."""
    with context.storage.begin(readonly=True) as uow:
        messages = uow.outbox.failing(after_id=after_id, limit=limit)
    return Items(items=[_out(m) for m in messages if state is None or m.state == state])


@router.get("/{message_id}", response_model=OutboxMessageOut, responses=problem_responses(404))
def get_message(message_id: MessageId, _token: Viewer, context: Context) -> OutboxMessageOut:
    with context.storage.begin(readonly=True) as uow:
        return _out(uow.outbox.get(message_id))


@router.post(
    "/{message_id}/retry", response_model=OutboxMessageOut, responses=problem_responses(404, 409)
)
def retry_message(message_id: MessageId, token: Admin, context: Context) -> OutboxMessageOut:
    """Deliver a failed message again now, with a fresh attempt count."""
    with context.storage.begin() as uow:
        before = uow.outbox.get(message_id)
        message = uow.outbox.retry(message_id, context.clock())
        record(uow, context, token, "outbox.retry", f"outbox:{message_id}", _details(before))
    return _out(message)


@router.post(
    "/{message_id}/drop", response_model=OutboxMessageOut, responses=problem_responses(404, 409)
)
def drop_message(message_id: MessageId, token: Admin, context: Context) -> OutboxMessageOut:
    """Give up on a failed message: it is never delivered."""
    with context.storage.begin() as uow:
        before = uow.outbox.get(message_id)
        message = uow.outbox.drop(message_id, context.clock())
        record(uow, context, token, "outbox.drop", f"outbox:{message_id}", _details(before))
    return _out(message)


def _details(message: OutboxMessage) -> dict[str, Any]:
    p = message.payload
    return {
        "kind": message.kind,
        "attempts": message.attempts,
        "reason": message.last_error,
        **{k: p[k] for k in ("device_id", "rollout_id") if isinstance(p.get(k), str)},
    }
