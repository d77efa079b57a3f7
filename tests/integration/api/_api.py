"""A synchronous test client over `httpx.ASGITransport` (the app runs in the same process, on an
anyio portal thread), and the world the API tests share: storage, the in-memory hub, the engine,
a settable clock and tokens of every role."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from service.api import ApiContext, create_app
from service.engine import Dispatcher, Engine, EngineConfig, MemoryDirector, MemoryNotifier
from service.hubgateway import MemoryHubGateway
from service.storage import Device, Release, Role, Storage

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CONFIG = EngineConfig(
    image_url="https://repo.test/image/metadata/",
    director_url="https://repo.test/director/devices/{device_id}/metadata/",
    targets_url="https://repo.test/image/targets/",
)
ADMIN = object()  # sentinel: authenticate as the admin token
PROBLEM = "application/problem+json"


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Api:
    """`api.get("/devices", token=secret)`; token defaults to the world's admin token."""

    def __init__(self, app: Any, portal: BlockingPortal, admin: str) -> None:
        self._portal = portal
        self._admin = admin
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test/api/v1"
        )

    def request(self, method: str, url: str, *, token: Any = ADMIN, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        secret = self._admin if token is ADMIN else token
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        call = functools.partial(self._client.request, method, url, headers=headers, **kw)
        return self._portal.call(call)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def close(self) -> None:
        self._portal.call(self._client.aclose)


@dataclass
class ApiWorld:
    storage: Storage
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.hub = MemoryHubGateway(clock=self.clock)
        self.engine = Engine(self.storage, self.hub, CONFIG)
        self.director = MemoryDirector()
        self.notifier = MemoryNotifier()
        self.dispatcher = Dispatcher(self.storage, self.hub, self.director, self.notifier, CONFIG)
        self.context = ApiContext(
            storage=self.storage, engine=self.engine, hub=self.hub, clock=self.clock
        )
        self.tokens = {role: self.issue(role.value, role) for role in Role}
        self.app = create_app(self.context)

    def issue(self, name: str, role: Role) -> str:
        with self.storage.begin() as uow:
            return uow.tokens.create(name, role, self.clock()).secret

    @property
    def admin(self) -> str:
        return self.tokens[Role.ADMIN]

    def seed_devices(self, n: int, *, hardware: str = "mt3620", **tags: str) -> list[str]:
        ids = [f"dev-{i:03d}" for i in range(n)]
        with self.storage.begin() as uow:
            uow.devices.upsert(
                Device(
                    d,
                    hardware,
                    T0,
                    profile="kws",
                    agent_version="1.0.0",
                    tags={"fleet": "demo", "site": "berlin" if i % 2 else "oslo", **tags},
                    last_seen=T0 + timedelta(minutes=i),
                )
                for i, d in enumerate(ids)
            )
        return ids

    def seed_release(self, release_id: str, counter: int = 1) -> None:
        with self.storage.begin() as uow:
            uow.releases.create(Release(release_id, counter, ("mt3620",), {}, T0, "alice"))

    def tick(self) -> None:
        now = self.clock()
        self.engine.tick(now)
        self.dispatcher.run_once(now)


@dataclass
class Session:
    world: ApiWorld
    api: Api


def open_session(storage: Storage, stack: ExitStack) -> Iterator[Session]:
    world = ApiWorld(storage)
    portal = stack.enter_context(start_blocking_portal())
    api = Api(world.app, portal, world.admin)
    try:
        yield Session(world, api)
    finally:
        api.close()
