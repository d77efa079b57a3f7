"""The web dashboard: static files served by the API app, no build step at runtime.

`mount_dashboard(app)` adds two things to a FastAPI app:

- `GET /` redirects to `/dashboard/` (query string kept, so `/?token=...` links still sign in);
- `/dashboard/...` serves `static/` (index.html for the folder itself).

The page reads the `/api/v1` routes with the bearer token the user typed (or passed once as
`?token=`), kept in the browser's sessionStorage. The vendored front-end packages in
`static/vendor/` are copied from pinned npm tarballs by `vendor.sh`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DASHBOARD_PATH", "STATIC_DIR", "mount_dashboard"]

DASHBOARD_PATH = "/dashboard"
STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at `/dashboard/` and redirect `/` to it."""

    async def root(request: Request) -> RedirectResponse:
        query = request.url.query
        target = f"{DASHBOARD_PATH}/" + (f"?{query}" if query else "")
        return RedirectResponse(target, status_code=307)

    app.add_api_route("/", root, methods=["GET"], include_in_schema=False)
    app.mount(
        DASHBOARD_PATH,
        StaticFiles(directory=STATIC_DIR, html=True, check_dir=True),
        name="dashboard",
    )
