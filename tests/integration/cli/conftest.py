"""A real tinyfleet service for the CLI tests: the FastAPI app under uvicorn on a free port, over a
temporary SQLite database, the in-memory hub gateway and the rollout engine, with a fleet of
simulated devices that install what they are offered (tests/integration/engine/_world.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from service.api import ApiContext, create_app
from service.cli.main import app as cli_app
from service.engine import Dispatcher, Engine, MemoryDirector, MemoryNotifier
from service.hubgateway import MemoryHubGateway
from service.registry import sync_registry
from service.storage import Release, Role, SqlStorage, upgrade
from tests.integration.engine._world import CONFIG, T0, Fleet

DEVICES = 6


@dataclass
class Clock:
    """The world's time, shared by the hub, the engine and the API."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Stack:
    """The running service and the world around it; `step()` moves the world one minute on."""

    storage: SqlStorage
    hub: MemoryHubGateway
    clock: Clock
    url: str
    admin: str
    home: Path
    device_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def now(self) -> datetime:
        return self.clock.now

    def __post_init__(self) -> None:
        self.engine = Engine(self.storage, self.hub, CONFIG)
        self.dispatcher = Dispatcher(
            self.storage, self.hub, MemoryDirector(), MemoryNotifier(), CONFIG
        )
        self.fleet = Fleet(self.hub, self.device_ids, set(), clock=lambda: self.clock.now)

    def step(self) -> None:
        with self._lock:
            self.clock.now += timedelta(minutes=1)
            self.fleet.step()
            self.engine.tick(self.now)
            self.dispatcher.run_once(self.now)

    def token(self, name: str, role: Role) -> str:
        with self.storage.begin() as uow:
            return uow.tokens.create(name, role, self.now).secret

    def env(self, **extra: str | None) -> dict[str, str | None]:
        """A clean environment: no user config, no ambient server or token."""
        base: dict[str, str | None] = {
            "TINYFLEET_SERVER": None,
            "TINYFLEET_TOKEN": None,
            "TINYFLEET_PROFILE": None,
            "TINYFLEET_CONFIG": None,
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "TINYFLEET_DATA_DIR": str(self.home / "data"),
            "COLUMNS": "200",
        }
        base.update(extra)
        return base

    def run(self, *args: str, token: str | None = None, **env: str | None) -> Result:
        """The CLI against this service, as the admin unless `token` is given."""
        runner = CliRunner()
        argv = [*args, "--server", self.url, "--token", token or self.admin]
        return runner.invoke(cli_app, argv, env=self.env(**env))

    def bare(self, *args: str, **env: str | None) -> Result:
        """The CLI with exactly these arguments (no --server, no --token)."""
        return CliRunner().invoke(cli_app, list(args), env=self.env(**env))


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    db_url = f"sqlite:///{tmp_path / 'tinyfleet.db'}"
    upgrade(db_url)
    storage = SqlStorage(db_url)
    clock = Clock()
    hub = MemoryHubGateway(clock=clock)
    ids = [f"dev-{n:03d}" for n in range(DEVICES)]
    for device in ids:
        hub.register_device(device)
        hub.set_tags(device, {"fleet": "demo", "hardwareId": "mt3620"})
    sync_registry(hub, storage, T0)
    with storage.begin() as uow:
        for n, rid in enumerate(("rel-0", "rel-1")):
            uow.releases.create(Release(rid, n, ("mt3620",), {}, T0, "alice"))
        admin = uow.tokens.create("root", Role.ADMIN, T0).secret

    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    world = Stack(storage, hub, clock, url, admin, tmp_path, device_ids=ids)
    context = ApiContext(storage=storage, engine=world.engine, hub=hub, clock=clock)
    app = create_app(context)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started, "the service did not start"
    try:
        yield world
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        storage.close()
