"""Device groups: by twin tag or by query; membership is dynamic."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from service.api._audit import record
from service.api._deps import After, Context, Limit, PathId, require
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, problem_responses
from service.api._schemas import DeviceOut, GroupIn, GroupOut, Items, PageOut
from service.api._views import device_out, group_out
from service.storage import ApiToken, DeviceGroup, Role

__all__ = ["router"]

router = APIRouter(prefix="/groups", tags=["groups"], responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Operator = Annotated[ApiToken, Depends(require(Role.OPERATOR))]
GroupId = PathId


@router.get("", response_model=Items[GroupOut])
def list_groups(_token: Viewer, context: Context) -> Items[GroupOut]:
    with context.storage.begin(readonly=True) as uow:
        return Items(items=[group_out(uow, g) for g in uow.groups.list()])


@router.put("/{group_id}", response_model=GroupOut)
def put_group(group_id: GroupId, body: GroupIn, token: Operator, context: Context) -> GroupOut:
    try:
        group = DeviceGroup(
            id=group_id,
            name=body.name,
            kind=body.kind,
            selector=body.selector,
            time_zone=body.time_zone,
            production=body.production,
        )
    except ValueError as exc:
        raise ApiProblem(
            422, "invalid", str(exc), errors=[{"loc": ["body"], "msg": str(exc)}]
        ) from exc
    with context.storage.begin() as uow:
        uow.groups.put(group)
        record(uow, context, token, "group.put", group_id, body.model_dump(mode="json"))
        return group_out(uow, group)


@router.get("/{group_id}", response_model=GroupOut, responses=problem_responses(404))
def get_group(group_id: GroupId, _token: Viewer, context: Context) -> GroupOut:
    with context.storage.begin(readonly=True) as uow:
        return group_out(uow, uow.groups.get(group_id))


@router.delete("/{group_id}", status_code=204, responses=problem_responses(404, 409))
def delete_group(group_id: GroupId, token: Operator, context: Context) -> Response:
    with context.storage.begin() as uow:
        uow.groups.delete(group_id)
        record(uow, context, token, "group.delete", group_id)
    return Response(status_code=204)


@router.get(
    "/{group_id}/members", response_model=PageOut[DeviceOut], responses=problem_responses(404)
)
def group_members(
    group_id: GroupId, _token: Viewer, context: Context, after: After = None, limit: Limit = 100
) -> PageOut[DeviceOut]:
    with context.storage.begin(readonly=True) as uow:
        page = uow.groups.members(group_id, after=after, limit=limit)
    return PageOut(items=[device_out(d) for d in page.items], next_after=page.next_after)
