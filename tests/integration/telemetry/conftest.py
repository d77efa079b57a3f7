"""Telemetry integration tests run against SQLite and PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import SqlStorage, upgrade
from service.telemetry import TelemetryStore
from tests.contract.storage.conftest import pg_database, pg_url  # noqa: F401 - fixtures


class Db:
    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        upgrade(url)
        self.storage = SqlStorage(url)
        self.store = TelemetryStore(self.storage.engine)

    def count(self, table: str) -> int:
        with self.storage.engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())

    def close(self) -> None:
        self.storage.close()


def open_db(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if name == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite:///{tmp_path / 'data' / 'tinyfleet.db'}"
    db = Db(name, url)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from open_db(request.param, request, tmp_path)


@pytest.fixture
def sqlite_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from open_db("sqlite", request, tmp_path)
