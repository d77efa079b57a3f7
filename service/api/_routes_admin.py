"""Health (no token), the audit log and its verification, API tokens."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from service.api._audit import record
from service.api._deps import MAX_LIMIT, Context, PathId, SeqAfter, require
from service.api._problems import PROBLEM_RESPONSES, problem_responses
from service.api._schemas import (
    AuditOut,
    ChainOut,
    HealthOut,
    IssuedTokenOut,
    Items,
    TokenIn,
    TokenOut,
)
from service.api._views import audit_out, token_out
from service.storage import ApiToken, Role

__all__ = ["health_router", "router"]

health_router = APIRouter(tags=["health"])
router = APIRouter(responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Admin = Annotated[ApiToken, Depends(require(Role.ADMIN))]


def _version() -> str:
    try:
        return version("tinyfleet")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


@health_router.get("/health", response_model=HealthOut, responses=problem_responses(503))
def health(context: Context) -> HealthOut:
    with context.storage.begin(readonly=True) as uow:
        uow.audit.entries(limit=1)
    return HealthOut(
        version=_version(),
        storage=True,
        engine=context.engine is not None,
        releases=context.releases is not None,
        hub=context.hub is not None,
        telemetry=context.telemetry is not None,
    )


@router.get("/audit", response_model=Items[AuditOut], tags=["audit"])
def audit_entries(
    _token: Viewer,
    context: Context,
    after_seq: SeqAfter = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Items[AuditOut]:
    with context.storage.begin(readonly=True) as uow:
        entries = uow.audit.entries(after_seq=after_seq, limit=limit)
    return Items(items=[audit_out(e) for e in entries])


@router.get("/audit/verify", response_model=ChainOut, tags=["audit"])
def audit_verify(_token: Viewer, context: Context) -> ChainOut:
    with context.storage.begin(readonly=True) as uow:
        report = uow.audit.verify_chain()
    return ChainOut(
        ok=report.ok,
        checked=report.checked,
        first_broken_seq=report.first_broken_seq,
        reason=report.reason,
    )


@router.post(
    "/tokens",
    status_code=201,
    response_model=IssuedTokenOut,
    tags=["tokens"],
    responses=problem_responses(409),
)
def create_token(body: TokenIn, token: Admin, context: Context) -> IssuedTokenOut:
    with context.storage.begin() as uow:
        issued = uow.tokens.create(body.name, body.role, context.clock())
        record(
            uow,
            context,
            token,
            "token.create",
            issued.token.id,
            {"name": body.name, "role": body.role.value},
        )
    t = issued.token
    return IssuedTokenOut(id=t.id, name=t.name, role=t.role, secret=issued.secret)


@router.get("/tokens", response_model=Items[TokenOut], tags=["tokens"])
def list_tokens(_token: Admin, context: Context) -> Items[TokenOut]:
    with context.storage.begin(readonly=True) as uow:
        return Items(items=[token_out(t) for t in uow.tokens.list()])


@router.delete(
    "/tokens/{token_id}", status_code=204, tags=["tokens"], responses=problem_responses(404)
)
def revoke_token(token_id: PathId, token: Admin, context: Context) -> Response:
    with context.storage.begin() as uow:
        uow.tokens.revoke(token_id, context.clock())
        record(uow, context, token, "token.revoke", token_id)
    return Response(status_code=204)
