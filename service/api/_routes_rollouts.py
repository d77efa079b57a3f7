"""Rollouts: create (planned by the engine), list, progress per stage and state, jobs, commands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.api._context import ApiContext
from service.api._deps import After, Context, Limit, PathId, QueryName, require
from service.api._inputs import Name
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, problem_responses
from service.api._rollout_spec import spec_from_body
from service.api._schemas import CommandIn, Items, JobOut, PageOut, RolloutIn, RolloutOut
from service.api._views import job_out, rollout_out
from service.domain.rollout_events import (
    Abort,
    Approve,
    NextStage,
    Pause,
    Resume,
    Rollback,
    RolloutEvent,
    Start,
)
from service.engine import AuditNote, Engine
from service.storage import ApiToken, Role

__all__ = ["router"]

router = APIRouter(prefix="/rollouts", tags=["rollouts"], responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Operator = Annotated[ApiToken, Depends(require(Role.OPERATOR))]
RolloutId = PathId


def _engine(context: ApiContext) -> Engine:
    if context.engine is None:
        raise ApiProblem(503, "unavailable", "the rollout engine is not running in this service")
    return context.engine


def _event(body: CommandIn, operator: str) -> RolloutEvent:
    reason = body.reason
    match body.command:
        case "start":
            return Start(operator)
        case "approve":
            return Approve(operator)
        case "resume":
            return Resume(operator)
        case "next-stage":
            return NextStage(operator)
        case "pause":
            return Pause(operator, reason) if reason else Pause(operator)
        case "abort":
            return Abort(operator, reason) if reason else Abort(operator)
        case "rollback":
            return Rollback(operator, reason) if reason else Rollback(operator)
    raise AssertionError(body.command)  # pragma: no cover - the schema allows nothing else


def _read(context: ApiContext, rollout_id: str) -> RolloutOut:
    with context.storage.begin(readonly=True) as uow:
        return rollout_out(uow, uow.rollouts.get(rollout_id))


@router.post("", status_code=201, response_model=RolloutOut, responses=problem_responses(404, 409))
def create_rollout(body: RolloutIn, token: Operator, context: Context) -> RolloutOut:
    engine = _engine(context)
    with context.storage.begin(readonly=True) as uow:
        group = uow.groups.get(body.group_id)
        uow.releases.get(body.release_id)
    spec = spec_from_body(body, production=group.production, time_zone=group.time_zone)
    note = AuditNote(
        token.name, "rollout.create", {"release_id": body.release_id, "group_id": body.group_id}
    )
    engine.create_rollout(spec, context.clock(), created_by=token.name, audit=note)
    return _read(context, body.id)


@router.get("", response_model=Items[RolloutOut])
def list_rollouts(
    _token: Viewer,
    context: Context,
    state: Annotated[list[Name] | None, Query(max_length=32, description="repeatable")] = None,
    group_id: QueryName = None,
) -> Items[RolloutOut]:
    with context.storage.begin(readonly=True) as uow:
        records = uow.rollouts.list(states=state or None, group_id=group_id)
        return Items(items=[rollout_out(uow, r) for r in records])


@router.get("/{rollout_id}", response_model=RolloutOut, responses=problem_responses(404))
def get_rollout(rollout_id: RolloutId, _token: Viewer, context: Context) -> RolloutOut:
    return _read(context, rollout_id)


@router.get("/{rollout_id}/jobs", response_model=PageOut[JobOut], responses=problem_responses(404))
def rollout_jobs(
    rollout_id: RolloutId,
    _token: Viewer,
    context: Context,
    state: Annotated[list[Name] | None, Query(max_length=32, description="repeatable")] = None,
    after: After = None,
    limit: Limit = 100,
) -> PageOut[JobOut]:
    with context.storage.begin(readonly=True) as uow:
        release_id = uow.rollouts.get(rollout_id).release_id
        page = uow.jobs.list(rollout_id, states=state or None, after=after, limit=limit)
    return PageOut(items=[job_out(j, release_id) for j in page.items], next_after=page.next_after)


@router.post(
    "/{rollout_id}/commands", response_model=RolloutOut, responses=problem_responses(404, 409)
)
def command_rollout(
    rollout_id: RolloutId, body: CommandIn, token: Operator, context: Context
) -> RolloutOut:
    engine = _engine(context)
    with context.storage.begin(readonly=True) as uow:
        uow.rollouts.get(rollout_id)
    note = AuditNote(token.name, f"rollout.{body.command}", {"reason": body.reason})
    engine.command(rollout_id, _event(body, token.name), context.clock(), audit=note)
    return _read(context, rollout_id)
