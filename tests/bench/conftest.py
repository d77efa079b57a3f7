"""Benchmarks run small by default (inside `make test`) and full with TINYFLEET_BENCH_FULL=1."""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("TINYFLEET_BENCH_FULL") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/bench" in str(item.fspath):
            item.add_marker(pytest.mark.bench)
