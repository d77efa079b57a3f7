"""The engine suite runs on every storage adapter: memory, SQLite and PostgreSQL (the local
server, or a throwaway cluster; one schema per test, see `tests/contract/storage/pg.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import MemoryStorage, SqlStorage, Storage, upgrade
from tests.contract.storage.conftest import pg_database, pg_url

__all__ = ["pg_database", "pg_url"]  # fixtures, re-exported for this directory


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
        return
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite:///{tmp_path / 'tinyfleet.db'}"
    upgrade(url)
    sql = SqlStorage(url)
    try:
        yield sql
    finally:
        sql.close()
