"""The storage contract suite runs every test against each adapter: memory, SQLite, PostgreSQL.

PostgreSQL: the local server if it answers, else a throwaway `initdb` cluster (see `pg.py`);
one scratch database per test run, one schema per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest

from service.storage import MemoryStorage, SqlStorage, Storage, upgrade
from tests.contract.storage.pg import postgres_server, scratch_database


@dataclass
class Backend:
    """A migrated, empty storage plus the raw access some tests need to play the attacker."""

    name: str
    storage: Storage
    url: str | None = None

    def tamper_audit(self, seq: int, actor: str) -> None:
        """Rewrite an audit entry behind the storage's back (bypassing the DB's guard)."""
        if isinstance(self.storage, MemoryStorage):
            entries = self.storage._tables.audit
            entries[seq - 1] = replace(entries[seq - 1], actor=actor)
            return
        self.raw(*self._unguard(), f"UPDATE audit_log SET actor = '{actor}' WHERE seq = {seq}")

    def delete_audit(self, seq: int) -> None:
        if isinstance(self.storage, MemoryStorage):
            del self.storage._tables.audit[seq - 1]
            return
        self.raw(*self._unguard(), f"DELETE FROM audit_log WHERE seq = {seq}")

    def _unguard(self) -> list[str]:
        if self.name == "postgresql":
            return ["ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"]
        return ["DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"]

    def query(self, statement: str) -> list[tuple[object, ...]]:
        assert isinstance(self.storage, SqlStorage)
        with self.storage.engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(statement)]

    def raw(self, *statements: str) -> None:
        assert isinstance(self.storage, SqlStorage)
        with self.storage.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    with postgres_server() as admin:
        if admin is None:
            yield None
            return
        with scratch_database(admin) as url:
            yield url


@pytest.fixture
def pg_url(pg_database: str | None) -> Iterator[str]:
    """A fresh schema in the run's scratch database, as a URL whose search_path points at it."""
    if pg_database is None:
        pytest.fail(
            "no PostgreSQL server answers on 127.0.0.1:5432 and no initdb was found: "
            "install Debian's postgresql package"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{pg_database}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def sqlite_file_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'tinyfleet.db'}"


def _backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if name == "memory":
        yield Backend("memory", MemoryStorage())
        return
    url = request.getfixturevalue("pg_url") if name == "postgresql" else sqlite_file_url(tmp_path)
    upgrade(url)
    storage = SqlStorage(url)
    try:
        yield Backend(name, storage, url)
    finally:
        storage.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.storage


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, not yet migrated SQL database (for the migration and CLI tests)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_file_url(tmp_path)
