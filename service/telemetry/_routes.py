"""The telemetry routes of the API contract (v1), as a router `create_app(routers=...)` mounts.

Glue only: a viewer token, a store query, a schema out. The store is the context's `telemetry`
(or the one given to `telemetry_router`); store failures answer 503 `unavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from service.api._deps import Context, PathId, QueryName, require
from service.api._inputs import AwareTime, check_seq_cursor
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, problem_responses
from service.storage import ApiToken, Role
from service.telemetry._errors import TelemetryStoreError
from service.telemetry._store import TelemetryStore
from service.telemetry._summary import summarize

__all__ = ["telemetry_router"]

T = TypeVar("T")
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Limit = Annotated[int, Query(ge=1, le=1000)]
Time = Annotated[AwareTime | None, Query()]


class SummaryItem(BaseModel):
    bucket_start: datetime
    release_id: str | None
    model_id: str
    model_version: str
    core: str
    count: int
    latency_mean_us: float
    latency_p50_us: float
    latency_p95_us: float
    score_mean: float
    anomaly_rate: float
    errors: int
    labels: dict[str, int]
    devices: int


class InferenceRow(BaseModel):
    device_id: str
    release_id: str | None
    core: str
    model_id: str
    model_version: str
    ts: datetime
    latency_us: int
    score: float
    label: str | None
    anomaly: bool | None
    enqueued_at: datetime


class DeadLetterOut(BaseModel):
    id: int
    received_at: datetime
    device_id: str | None
    reason: str
    detail: str
    partition: str
    sequence: int


class StatsOut(BaseModel):
    ingested: int
    records: int
    duplicates: int
    dead_letters: int
    by_reason: dict[str, int]
    lag: dict[str, int]


class VerdictOut(BaseModel):
    stage: int
    verdict: str
    reason: str
    numbers: dict[str, float]
    metrics: dict[str, Any]
    at: datetime


class SummaryPage(BaseModel):
    items: list[SummaryItem]


class RowsPage(BaseModel):
    items: list[InferenceRow]


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_after: str | None = None


class VerdictPage(BaseModel):
    items: list[VerdictOut]


def _matches(key: dict[str, Any], **wanted: str | None) -> bool:
    """Device rows (model id "") carry errors for every model of their core."""
    for name, value in wanted.items():
        if value is None or (name != "core" and key["model_id"] == ""):
            continue
        if key[name] != value:
            return False
    return True


def telemetry_router(store: TelemetryStore | None = None) -> APIRouter:
    """The routes over `store`, or over the app context's `telemetry` when None."""
    router = APIRouter(tags=["telemetry"], responses=PROBLEM_RESPONSES)

    def the_store(context: Context) -> TelemetryStore:
        found = store if store is not None else context.telemetry
        if found is None:
            raise ApiProblem(503, "unavailable", "telemetry is not configured on this service")
        return found

    store_dep = Depends(the_store)

    def call(query: Callable[[], T]) -> T:
        try:
            return query()
        except TelemetryStoreError as exc:
            raise ApiProblem(503, "unavailable", str(exc)) from exc

    @router.get("/telemetry/summary", response_model=SummaryPage)
    def summary(
        *,
        _token: Viewer,
        telemetry: TelemetryStore = store_dep,
        group_id: QueryName = None,
        release_id: QueryName = None,
        model_id: QueryName = None,
        model_version: QueryName = None,
        core: QueryName = None,
        since: Time = None,
        until: Time = None,
        bucket: Literal["minute", "hour"] = "hour",
    ) -> dict[str, Any]:
        rows = call(
            lambda: telemetry.rollup_rows(
                group_id=group_id or "",
                release_id=release_id,
                since=since,
                until=until,
            )
        )
        wanted = [
            (key, rollup)
            for key, rollup in rows
            if _matches(key, model_id=model_id, model_version=model_version, core=core)
        ]
        return {"items": summarize(wanted, bucket)}

    @router.get("/telemetry/devices/{device_id}", response_model=RowsPage)
    def device(
        *,
        _token: Viewer,
        telemetry: TelemetryStore = store_dep,
        device_id: PathId,
        since: Time = None,
        until: Time = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        rows = call(lambda: telemetry.device_rows(device_id, since=since, until=until, limit=limit))
        return {"items": rows}

    @router.get("/telemetry/dead-letters", response_model=DeadLetterPage)
    def dead_letters(
        *,
        _token: Viewer,
        telemetry: TelemetryStore = store_dep,
        after: Annotated[str | None, Query(max_length=19)] = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        try:
            cursor = None if not after else check_seq_cursor(after)
        except ValueError:
            raise ApiProblem(
                422,
                "invalid",
                f"after {after!r} is not a dead-letter cursor",
                errors=[{"loc": ["query", "after"], "msg": "must be a previous next_after"}],
            ) from None
        items = call(lambda: telemetry.dead_letters(after=cursor, limit=limit))
        next_after = str(items[-1]["id"]) if len(items) == limit else None
        return {"items": items, "next_after": next_after}

    @router.get("/telemetry/stats", response_model=StatsOut)
    def stats(*, _token: Viewer, telemetry: TelemetryStore = store_dep) -> dict[str, Any]:
        return call(telemetry.stats)

    @router.get(
        "/rollouts/{rollout_id}/verdicts",
        response_model=VerdictPage,
        responses=problem_responses(404),
    )
    def verdicts(
        *,
        _token: Viewer,
        context: Context,
        telemetry: TelemetryStore = store_dep,
        rollout_id: PathId,
    ) -> dict[str, Any]:
        with context.storage.begin(readonly=True) as uow:
            uow.rollouts.get(rollout_id)  # 404 when unknown
        return {"items": call(lambda: telemetry.verdicts(rollout_id))}

    return router
