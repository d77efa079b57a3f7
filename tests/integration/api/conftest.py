"""The API tests run over SQLite and memory storage; the rollout lifecycle and the audit chain
run on PostgreSQL too (the local server, or a throwaway cluster; one scratch database each)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.storage import MemoryStorage, SqlStorage, Storage, upgrade
from tests.contract.blobs.conftest import azurite  # noqa: F401 (a fixture, for test_runtime)
from tests.contract.storage.pg import postgres_server, scratch_database
from tests.integration.api._api import Session, open_session


def _sqlite(tmp_path: Path) -> Storage:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    return SqlStorage(url)


def _over(storage: Storage) -> Iterator[Session]:
    with ExitStack() as stack:
        stack.callback(storage.close)
        yield from open_session(storage, stack)


def _sessions(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if kind == "postgresql":
        admin = request.getfixturevalue("pg_admin_url")
        with scratch_database(admin) as url:
            upgrade(url)
            yield from _over(SqlStorage(url))
        return
    yield from _over(_sqlite(tmp_path) if kind == "sqlite" else MemoryStorage())


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with postgres_server() as url:
        if url is None:
            pytest.skip("no PostgreSQL server and no initdb to start one")
        yield url


@pytest.fixture(params=["sqlite", "memory"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    yield from _sessions(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    yield from _sessions(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def every_session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    yield from _sessions(request.param, request, tmp_path)
