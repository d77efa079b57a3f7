"""Device groups: by twin tag or by query; membership is dynamic.

A group's `production` flag is what makes a rollout need a second operator, so only an admin
may create, replace or delete a production group or turn the flag on or off: otherwise one
operator could switch it off (or narrow the selector, or delete the group), run a rollout alone
and put it back. Query selectors must name an operator-set tag (see `group_filter`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from service.api._audit import record
from service.api._deps import After, Context, Limit, ensure_role, require
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, problem_responses
from service.api._schemas import DeviceOut, GroupIn, GroupOut, Items, PageOut
from service.api._views import device_out, group_out
from service.storage import (
    ApiToken,
    DeviceGroup,
    GroupKind,
    NotFoundError,
    Role,
    UnitOfWork,
    check_membership,
)

__all__ = ["router"]

router = APIRouter(prefix="/groups", tags=["groups"], responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Operator = Annotated[ApiToken, Depends(require(Role.OPERATOR))]
GroupId = Annotated[str, Path(min_length=1, max_length=200)]


def _is_production(uow: UnitOfWork, group_id: str) -> bool:
    try:
        return uow.groups.get(group_id).production
    except NotFoundError:
        return False


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
        if group.kind is GroupKind.QUERY:
            check_membership(group)
    except ValueError as exc:
        raise ApiProblem(
            422, "invalid", str(exc), errors=[{"loc": ["body"], "msg": str(exc)}]
        ) from exc
    with context.storage.begin() as uow:
        if group.production or _is_production(uow, group_id):
            ensure_role(token, Role.ADMIN, "writing a production group")
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
        if _is_production(uow, group_id):
            ensure_role(token, Role.ADMIN, "deleting a production group")
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
    now = context.clock()
    return PageOut(items=[device_out(d, now) for d in page.items], next_after=page.next_after)
