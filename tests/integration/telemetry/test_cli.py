"""`tinyfleet telemetry ...` against a real API server over a real store."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from service.api import ApiContext, create_app
from service.cli.main import app as cli_app
from service.storage import Role
from service.telemetry import IngestWorker, telemetry_router
from tests.integration.telemetry._world import Fleet
from tests.integration.telemetry.conftest import Db


@pytest.fixture
def server(sqlite_db: Db, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    with sqlite_db.storage.begin() as uow:
        secret = uow.tokens.create("viewer", Role.VIEWER, datetime.now(UTC)).secret
    app = create_app(
        ApiContext(sqlite_db.storage, telemetry=sqlite_db.store),
        routers=[telemetry_router()],
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started:
            break
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", secret, tmp_path
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def run(server: tuple[str, str, Path], *args: str) -> Result:
    url, secret, home = server
    env = {
        "TINYFLEET_SERVER": None,
        "TINYFLEET_TOKEN": None,
        "TINYFLEET_PROFILE": None,
        "TINYFLEET_CONFIG": None,
        "XDG_CONFIG_HOME": str(home / "config"),
        "TINYFLEET_DATA_DIR": str(home / "data"),
        "COLUMNS": "200",
    }
    argv = ["telemetry", *args, "--server", url, "--token", secret]
    return CliRunner().invoke(cli_app, argv, env=env)


def test_telemetry_commands(sqlite_db: Db, server: tuple[str, str, Path]) -> None:
    fleet = Fleet()
    for d in range(3):
        fleet.send(fleet.batch(f"dev-{d}", n=7))
    fleet.raw("dev-1", b"\x00\x01")
    IngestWorker(fleet.source, sqlite_db.store).run_once()

    result = run(server, "summary", "--bucket", "minute", "--json")
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.output)
    assert item["count"] == 21

    table = run(server, "summary")
    assert table.exit_code == 0 and "kws@2" in table.output

    rows = run(server, "device", "dev-2", "--limit", "3", "--json")
    assert rows.exit_code == 0 and len(json.loads(rows.output)) == 3

    letters = run(server, "dead-letters", "--json")
    assert [x["reason"] for x in json.loads(letters.output)] == ["malformed"]

    stats = run(server, "stats")
    assert stats.exit_code == 0 and "ingested 3 messages (24 records)" in stats.output
    assert "malformed: 1" in stats.output
