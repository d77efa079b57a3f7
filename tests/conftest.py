"""Suite-wide collection order: the longest files first.

`make test` spreads whole files over several worker processes (pytest-xdist, `--dist
loadfile`), handing them out in collection order. The system tests take minutes each (the demo,
the engine crash loops) against seconds for almost everything else; started last, they would
run alone at the end while the other workers sit idle. Within a file the order is unchanged,
and the suite passes in any order (a stable sort on the path prefix only).
"""

from __future__ import annotations

import pytest

# Path prefixes, slowest first; everything else keeps its place after them.
_FIRST = (
    "tests/system/test_demo.py",
    "tests/system/test_engine_crash_loop.py",
    "tests/system/",
    "tests/bench/",
    "tests/integration/",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid
    for rank, prefix in enumerate(_FIRST):
        if path.startswith(prefix):
            return rank
    return len(_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)
