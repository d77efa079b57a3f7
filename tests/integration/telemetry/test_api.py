"""The telemetry routes over a real store, through the API app (H3's `create_app`)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from device_agent.protocol.telemetry import EventRecord
from service.api import ApiContext, create_app
from service.storage import Role
from service.telemetry import IngestWorker, TelemetryGate, telemetry_router
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db
from tests.integration.telemetry.test_gate import NOW, ingest_fleet, setup_rollout


def client(db: Db) -> tuple[TestClient, dict[str, str]]:
    with db.storage.begin() as uow:
        issued = uow.tokens.create("viewer-1", Role.VIEWER, datetime.now(UTC))
    app = create_app(ApiContext(db.storage, telemetry=db.store), routers=[telemetry_router()])
    return TestClient(app), {"Authorization": f"Bearer {issued.secret}"}


def test_summary_device_rows_dead_letters_and_stats(sqlite_db: Db) -> None:
    db = sqlite_db
    fleet = Fleet()
    reject = (EventRecord(T0_MS, "reject", "m4-0", "rel-2", 3, "bad signature"),)
    for d in range(3):
        fleet.send(fleet.batch(f"dev-{d}", n=10, events=reject if d == 0 else ()))
    fleet.raw("dev-9", b"garbage")
    IngestWorker(fleet.source, db.store).run_once()
    http, auth = client(db)

    summary = http.get("/api/v1/telemetry/summary", params={"bucket": "minute"}, headers=auth)
    assert summary.status_code == 200, summary.text
    [item] = summary.json()["items"]
    assert (item["count"], item["errors"], item["model_id"], item["core"]) == (30, 1, "kws", "m4-0")
    assert sum(item["labels"].values()) == 30 and item["latency_p95_us"] > 0
    other = http.get("/api/v1/telemetry/summary", params={"model_id": "nope"}, headers=auth)
    assert other.json()["items"] == []

    rows = http.get("/api/v1/telemetry/devices/dev-1", params={"limit": 4}, headers=auth).json()
    assert len(rows["items"]) == 4 and rows["items"][0]["device_id"] == "dev-1"

    letters = http.get("/api/v1/telemetry/dead-letters", headers=auth).json()
    assert [x["reason"] for x in letters["items"]] == ["malformed"]
    assert letters["next_after"] is None

    stats = http.get("/api/v1/telemetry/stats", headers=auth).json()
    assert (stats["ingested"], stats["dead_letters"], stats["by_reason"]) == (
        3,
        1,
        {"malformed": 1},
    )
    assert set(stats["lag"].values()) == {0}


def test_verdict_history(sqlite_db: Db) -> None:
    db = sqlite_db
    ro = setup_rollout(db)
    ingest_fleet(db, canary_latency=3000.0, canary_score=0.8)
    TelemetryGate(db.store, db.storage).evaluate(ro, 0, NOW)  # type: ignore[arg-type]
    http, auth = client(db)
    answer = http.get("/api/v1/rollouts/ro-1/verdicts", headers=auth)
    assert answer.status_code == 200, answer.text
    [verdict] = answer.json()["items"]
    assert verdict["verdict"] == "fail" and verdict["numbers"]["canary_devices"] == 10
    assert http.get("/api/v1/rollouts/nope/verdicts", headers=auth).status_code == 404


def test_a_token_is_needed(sqlite_db: Db) -> None:
    http, _ = client(sqlite_db)
    answer = http.get("/api/v1/telemetry/stats")
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
