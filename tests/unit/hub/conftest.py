"""Fixtures for the hub's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.hub.memory_hub import MemoryHub


@pytest.fixture
def memhub(tmp_path: Path) -> Iterator[MemoryHub]:
    hub = MemoryHub(tmp_path)
    yield hub
    hub.close()
