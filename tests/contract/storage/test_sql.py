"""What only the SQL adapters have: migrations, the CLI, pragmas, cross-connection behaviour."""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from service.cli.main import app
from service.storage import (
    DeviceFilter,
    RevisionConflictError,
    SqlStorage,
    UnavailableError,
    current_revision,
    head_revision,
    upgrade,
)
from service.storage._schema import METADATA
from tests.contract.storage.conftest import Backend
from tests.contract.storage.factories import T0, seed_rollout
from tests.contract.storage.pg import scratch_database, throwaway_cluster


def test_upgrade_creates_the_schema_once(sql_url: str) -> None:
    assert current_revision(sql_url) is None
    assert upgrade(sql_url) == head_revision()
    assert upgrade(sql_url) == head_revision()  # a second run has nothing to do
    assert current_revision(sql_url) == head_revision()


def test_migrated_schema_matches_the_table_definitions(sql_url: str) -> None:
    # Packages that own tables define them on the storage's METADATA (migration 0003 creates
    # the telemetry tables): import them so that the comparison sees every table.
    importlib.import_module("service.telemetry._schema")
    upgrade(sql_url)
    storage = SqlStorage(sql_url)
    try:
        with storage.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), METADATA)
    finally:
        storage.close()
    assert diff == []


def test_cli_db_upgrade(sql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # migrations are found inside the package, not via the cwd
    result = CliRunner().invoke(app, ["db", "upgrade", "--db", sql_url, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["from"], payload["to"]) == (None, head_revision())
    assert payload["database"].split("?")[0] == sql_url.split("?")[0]
    again = CliRunner().invoke(app, ["db", "upgrade", "--db", sql_url])
    assert again.exit_code == 0 and "up to date" in again.stdout


def test_cli_db_upgrade_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "tinyfleet.db").is_file()


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("mysql://db/x", 2, "unsupported database URL"),
        ("postgresql://u:hunter2@127.0.0.1:1/x", 1, "cannot migrate the database"),
    ],
    ids=["unsupported-scheme", "unreachable-server"],
)
def test_cli_db_upgrade_errors(url: str, code: int, message: str) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--db", url])
    assert result.exit_code == code
    assert message in result.output.replace("\n", " ")
    assert "hunter2" not in result.output


def test_unreachable_database_is_unavailable() -> None:
    storage = SqlStorage("postgresql://u@127.0.0.1:1/x?connect_timeout=2")
    with pytest.raises(UnavailableError), storage.begin() as uow:
        uow.devices.count(DeviceFilter())
    storage.close()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    storage = SqlStorage(url)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    storage.close()


def _race(workers: int, work: object) -> list[BaseException | None]:
    """Run `work(i)` in parallel threads; returns each thread's exception (or None)."""
    assert callable(work)
    outcomes: list[BaseException | None] = [None] * workers
    start = threading.Barrier(workers)

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # collected and asserted on by the test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_concurrent_saves_of_one_revision_let_exactly_one_win(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    with sql_backend.storage.begin() as uow:
        read = seed_rollout(uow)
    replicas = [SqlStorage(sql_backend.url) for _ in range(4)]

    def save(i: int) -> None:
        with replicas[i].begin() as uow:
            uow.rollouts.save(replace(read, state=f"by-{i}"), read.revision)

    outcomes = _race(4, save)
    for replica in replicas:
        replica.close()
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, RevisionConflictError) for o in outcomes if o is not None)
    with sql_backend.storage.begin(readonly=True) as uow:
        assert uow.rollouts.get("ro-1").revision == 2


def test_concurrent_audit_appends_keep_one_chain(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    replicas = [SqlStorage(sql_backend.url) for _ in range(3)]

    def append(i: int) -> None:
        for n in range(5):
            with replicas[i].begin() as uow:
                uow.audit.append(
                    at=T0 + timedelta(seconds=n), actor=f"r{i}", action="x", subject="s", details={}
                )

    outcomes = _race(3, append)
    for replica in replicas:
        replica.close()
    assert outcomes == [None, None, None]
    with sql_backend.storage.begin(readonly=True) as uow:
        report = uow.audit.verify_chain()
    assert report.ok and report.checked == 15


def test_postgres_advisory_lock_has_one_holder(pg_url: str) -> None:
    upgrade(pg_url)
    first, second = SqlStorage(pg_url), SqlStorage(pg_url)
    key = 0x7466_0000 + threading.get_ident() % 1000  # distinct from parallel runs' keys
    a, b = first.advisory_lock(key), second.advisory_lock(key)
    try:
        assert a.try_acquire() and a.held
        assert a.try_acquire()  # re-entrant for its holder
        assert not b.try_acquire() and not b.held
        a.check()
        a.release()
        assert not a.held
        assert b.try_acquire()
    finally:
        a.release()
        b.release()
        first.close()
        second.close()


def test_advisory_lock_needs_postgres(tmp_path: Path) -> None:
    storage = SqlStorage(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="PostgreSQL"):
        storage.advisory_lock(1)
    storage.close()


def test_a_throwaway_cluster_serves_a_migrated_database_and_goes_away() -> None:
    """The fallback the suite uses on machines where no server runs."""
    with throwaway_cluster() as admin:
        assert admin is not None, "initdb and pg_ctl are needed (Debian package postgresql)"
        with scratch_database(admin) as url:
            assert upgrade(url) == head_revision()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(admin, connect_timeout=2)


def test_sqlite_readers_do_not_block_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    reader, writer = SqlStorage(url), SqlStorage(url)
    try:
        with reader.begin(readonly=True) as seen:
            assert seen.outbox.pending() == 0  # the read snapshot starts here
            with writer.begin() as uow:  # would wait out the busy timeout under a write lock
                uow.outbox.append("offer", {}, T0)
            assert seen.outbox.pending() == 0  # WAL: the reader keeps its snapshot
        with reader.begin(readonly=True) as fresh:
            assert fresh.outbox.pending() == 1
    finally:
        reader.close()
        writer.close()
