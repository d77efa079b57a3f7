"""`create_app(context)`: the FastAPI application, its routers, problem handlers and the
dashboard's static files."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

from service.api import (
    _routes_admin,
    _routes_devices,
    _routes_groups,
    _routes_outbox,
    _routes_releases,
    _routes_rollouts,
)
from service.api._context import ApiContext
from service.api._problems import Problem, install_problem_handlers
from service.web import mount_dashboard

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


def create_app(
    context: ApiContext,
    *,
    routers: Sequence[APIRouter] = (),
    dashboard: bool = True,
) -> FastAPI:
    """The application over `context`; `routers` are other packages' routers (telemetry),
    mounted under `/api/v1`; with `dashboard`, the web dashboard at `/dashboard/` (and `/`)."""
    app = FastAPI(
        title="tinyfleet",
        version="1",
        description="Secure OTA updates and inference telemetry for TinyML fleets.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.context = context
    install_problem_handlers(app)
    for router in (
        _routes_admin.health_router,
        _routes_devices.router,
        _routes_groups.router,
        _routes_releases.router,
        _routes_rollouts.router,
        _routes_admin.router,
        _routes_outbox.router,
        *routers,
    ):
        app.include_router(router, prefix=API_PREFIX)
    _register_problem_schema(app)
    if dashboard:
        mount_dashboard(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Make sure `#/components/schemas/Problem` exists even if FastAPI names it otherwise."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.setdefault("Problem", Problem.model_json_schema())
        return app.openapi_schema or schema

    app.openapi = openapi  # type: ignore[method-assign]
