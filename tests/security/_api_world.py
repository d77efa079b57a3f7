"""The whole HTTP API over SQL storage (SQLite, where out-of-range numbers and dates used to
overflow, or PostgreSQL), with the telemetry router and the real release service, for the
attack tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from anyio.from_thread import start_blocking_portal

from service.api import ApiLimits, create_app
from service.storage import SqlStorage, upgrade
from service.telemetry import build_telemetry
from tests.integration.api._api import Api, ApiWorld
from tests.unit.releases._world import ReleaseWorld


@contextmanager
def full_api(
    tmp_path: Path, limits: ApiLimits | None = None, *, url: str | None = None
) -> Iterator[tuple[ApiWorld, Api]]:
    """The app over SQLite in `tmp_path`, or over the database at `url`."""
    url = url or f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    storage = SqlStorage(url)
    with ExitStack() as stack:
        stack.callback(storage.close)
        world = ApiWorld(storage)
        releases = ReleaseWorld(tmp_path / "releases", storage=storage)
        telemetry = build_telemetry(storage=storage, clock=world.clock)
        world.context.releases = releases.service
        world.context.telemetry = telemetry.store
        if limits is not None:
            world.context.limits = limits
        world.app = create_app(world.context, routers=[telemetry.router])
        portal = stack.enter_context(start_blocking_portal())
        api = Api(world.app, portal, world.admin)
        stack.callback(api.close)
        yield world, api
