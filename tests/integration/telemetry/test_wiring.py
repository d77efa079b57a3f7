"""`build_telemetry`: what the service runtime composes from its storage and a source."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from service.api import ApiContext, create_app
from service.storage import MemoryStorage, Role
from service.telemetry import TelemetryGate, build_telemetry
from tests.integration.telemetry._world import Fleet
from tests.integration.telemetry.conftest import Db


def test_sql_storage_gets_a_store_a_gate_and_a_draining_worker(sqlite_db: Db) -> None:
    fleet = Fleet()
    for d in range(30):
        fleet.send(fleet.batch(f"dev-{d}", n=2))
    parts = build_telemetry(storage=sqlite_db.storage, source=fleet.source)
    assert parts.store is not None and isinstance(parts.gate, TelemetryGate)
    [worker] = parts.workers
    worker.run_once()  # drains the feed in one call
    assert sqlite_db.count("telemetry_inference") == 60


def test_memory_storage_answers_unavailable() -> None:
    storage = MemoryStorage()
    parts = build_telemetry(storage=storage)
    assert parts.store is None and parts.gate is None and parts.workers == []
    with storage.begin() as uow:
        secret = uow.tokens.create("v", Role.VIEWER, datetime.now(UTC)).secret
    app = create_app(ApiContext(storage), routers=[parts.router])
    answer = TestClient(app).get(
        "/api/v1/telemetry/stats", headers={"Authorization": f"Bearer {secret}"}
    )
    assert answer.status_code == 503 and answer.json()["code"] == "unavailable"
