"""Lease mode wired in: `build_telemetry(leases=...)`, the settings the runtime reads, and
`tinyfleet telemetry ingest --leases` on the mock hub's feed file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from typer.testing import CliRunner

from device_agent.protocol.telemetry import encode_batch, message_id, message_properties
from infra.hub import TelemetryFeed
from infra.hub._feed import NewEvent
from service.cli.main import app as cli_app
from service.config import Settings
from service.runtime import ServiceRuntime
from service.telemetry import LeaseConfig, MemorySource, build_telemetry
from service.telemetry._leases import heartbeats, leases
from tests.integration.telemetry._world import T0_MS, Fleet
from tests.integration.telemetry.conftest import Db

NOW = datetime(2026, 12, 8, 9, tzinfo=UTC)


def owners(db: Db) -> dict[str, str | None]:
    with db.storage.engine.connect() as conn:
        return dict(conn.execute(sa.select(leases.c.partition, leases.c.owner)).all())


def test_the_wired_worker_takes_its_share_and_hands_it_back_on_close(sqlite_db: Db) -> None:
    fleet = Fleet(source=MemorySource(4))
    for d in range(8):
        fleet.send(fleet.batch(f"dev-{d}", n=2))
    parts = build_telemetry(
        storage=sqlite_db.storage,
        source=fleet.source,
        clock=lambda: NOW,
        leases=LeaseConfig(ttl=timedelta(seconds=20), worker_id="svc-1"),
    )
    [worker] = parts.workers
    worker.run_once()  # batches back to back until the feed is drained
    assert sqlite_db.store.stats()["ingested"] == 8
    assert owners(sqlite_db) == dict.fromkeys("0123", "svc-1")
    worker.close()
    assert owners(sqlite_db) == dict.fromkeys("0123", None)
    assert sqlite_db.count(heartbeats.name) == 0


def test_the_runtime_reads_lease_mode_from_the_settings(tmp_path: Path) -> None:
    off = ServiceRuntime(Settings(data_dir=tmp_path))
    assert off._telemetry_leases() is None
    on = ServiceRuntime(
        Settings(
            data_dir=tmp_path,
            telemetry_leases=True,
            telemetry_lease_ttl=timedelta(seconds=45),
            telemetry_worker_id="ingest-a",
        )
    )
    assert on._telemetry_leases() == LeaseConfig(ttl=timedelta(seconds=45), worker_id="ingest-a")
    unnamed = ServiceRuntime(Settings(data_dir=tmp_path, telemetry_leases=True))._telemetry_leases()
    assert unnamed is not None and unnamed.worker_id and unnamed.ttl == timedelta(seconds=30)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"telemetry_lease_ttl": timedelta(seconds=2)}, id="ttl-too-short"),
        pytest.param({"telemetry_lease_ttl": timedelta(hours=2)}, id="ttl-too-long"),
        pytest.param({"telemetry_worker_id": "w" * 201}, id="worker-id-too-long"),
    ],
)
def test_bad_lease_settings_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, **bad)  # type: ignore[arg-type]


def _feed_file(path: Path, messages: int) -> None:
    fleet = Fleet()
    feed = TelemetryFeed.open(path, 4)
    batches = [fleet.batch(f"dev-{d}", n=2) for d in range(messages)]
    feed.append(
        [
            NewEvent(
                b.device_id,
                encode_batch(b),
                dict(message_properties(b)),
                {
                    "iothub-connection-device-id": b.device_id,
                    "message-id": message_id(b.device_id, b.seq),
                },
                T0_MS,
            )
            for b in batches
        ]
    )
    feed.close()


def test_the_ingest_command_runs_a_leased_worker(sqlite_db: Db, tmp_path: Path) -> None:
    _feed_file(tmp_path / "feed.sqlite", 12)
    runner = CliRunner()
    args = ["telemetry", "ingest", "--feed", str(tmp_path / "feed.sqlite"), "--db", sqlite_db.url]
    result = runner.invoke(cli_app, [*args, "--leases", "--worker-id", "cli-1", "--once"])
    assert result.exit_code == 0, result.output
    assert "ingested 12 messages" in result.output
    assert sqlite_db.store.stats()["ingested"] == 12
    assert owners(sqlite_db) == dict.fromkeys("0123", None)  # released on the way out

    both = runner.invoke(cli_app, [*args, "--leases", "--partitions", "0", "--once"])
    assert both.exit_code == 2
    assert "not both" in both.output
