"""The API world for attack tables that go through the real API and engine: memory storage and
SQLite (group membership is evaluated in Python on one and in SQL on the other)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.storage import MemoryStorage, SqlStorage, Storage, upgrade
from tests.integration.api._api import Session, open_session


def _storage(kind: str, tmp_path: Path) -> Storage:
    if kind == "memory":
        return MemoryStorage()
    url = f"sqlite:///{tmp_path / 'security.db'}"
    upgrade(url)
    return SqlStorage(url)


@pytest.fixture(name="session", params=["memory", "sqlite"])
def session_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    with ExitStack() as stack:
        storage = _storage(request.param, tmp_path)
        stack.callback(storage.close)
        yield from open_session(storage, stack)
