"""Fixtures the system tests share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """A CPU-bound process beside the stack under test: the demo and `tinyfleet up` must finish
    their rollouts under contention (a soak that could not end when telemetry came late, and
    cores starved of acknowledgements, once made them fail)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()
