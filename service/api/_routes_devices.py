"""Devices: list with filters, one device, its jobs, and registry sync from the hub."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.api._audit import record
from service.api._deps import After, Context, Limit, require
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, problem_responses
from service.api._schemas import DeviceOut, Items, JobOut, PageOut, SyncOut
from service.api._views import device_out, job_out
from service.registry import sync_registry
from service.storage import ApiToken, DeviceFilter, Role

__all__ = ["router"]

router = APIRouter(prefix="/devices", tags=["devices"], responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Operator = Annotated[ApiToken, Depends(require(Role.OPERATOR))]


def _tags(tags: list[str]) -> dict[str, str]:
    out = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ApiProblem(
                422,
                "invalid",
                f"tag {tag!r} is not key=value",
                errors=[{"loc": ["query", "tag"], "msg": "must be key=value"}],
            )
        out[key] = value
    return out


@router.get("", response_model=PageOut[DeviceOut])
def list_devices(
    _token: Viewer,
    context: Context,
    hardware_id: str | None = None,
    profile: str | None = None,
    agent_version: str | None = None,
    tag: Annotated[list[str], Query(description="key=value, repeatable")] = [],  # noqa: B006
    last_seen_after: datetime | None = None,
    after: After = None,
    limit: Limit = 100,
) -> PageOut[DeviceOut]:
    if last_seen_after is not None and last_seen_after.tzinfo is None:
        raise ApiProblem(
            422,
            "invalid",
            "last_seen_after needs a time zone",
            errors=[{"loc": ["query", "last_seen_after"], "msg": "must be timezone-aware"}],
        )
    where = DeviceFilter(
        hardware_id=hardware_id,
        profile=profile,
        agent_version=agent_version,
        tags=_tags(tag),
        last_seen_after=last_seen_after,
    )
    with context.storage.begin(readonly=True) as uow:
        page = uow.devices.list(where, after=after, limit=limit)
    now = context.clock()
    return PageOut(items=[device_out(d, now) for d in page.items], next_after=page.next_after)


@router.post("/sync", response_model=SyncOut)
def sync_devices(token: Operator, context: Context) -> SyncOut:
    if context.hub is None:
        raise ApiProblem(503, "unavailable", "no hub is configured: nothing to sync from")
    synced = sync_registry(context.hub, context.storage, context.clock())
    with context.storage.begin() as uow:
        record(uow, context, token, "devices.sync", "registry", {"synced": synced})
    return SyncOut(synced=synced)


@router.get("/{device_id}", response_model=DeviceOut, responses=problem_responses(404))
def get_device(device_id: str, _token: Viewer, context: Context) -> DeviceOut:
    with context.storage.begin(readonly=True) as uow:
        return device_out(uow.devices.get(device_id), context.clock())


@router.get("/{device_id}/jobs", response_model=Items[JobOut], responses=problem_responses(404))
def device_jobs(device_id: str, _token: Viewer, context: Context) -> Items[JobOut]:
    with context.storage.begin(readonly=True) as uow:
        uow.devices.get(device_id)
        jobs = uow.jobs.for_device(device_id)
        releases = {r: uow.rollouts.get(r).release_id for r in {j.rollout_id for j in jobs}}
    return Items(items=[job_out(j, releases[j.rollout_id]) for j in jobs])
