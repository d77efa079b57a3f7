"""Real core processes on SOCK_SEQPACKET socket pairs, started the way a composition root does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import CoreClient, CoreProcess
from firmware.core import command_line
from firmware.icc import MT3620
from tests.unit.firmware.conftest import IMAGES


@pytest.fixture
def spawn_core() -> Iterator[Any]:
    started: list[CoreProcess] = []

    def spawn(
        state: Path, core_id: str = "m4-0", image: str = "m4-1.0.0.json", **faults: Any
    ) -> tuple[CoreProcess, CoreClient]:
        process = CoreProcess.spawn(
            lambda fd: command_line(
                core_id=core_id, state_dir=state, firmware=IMAGES / image, fd=fd, profile="mt3620",
                inference_period_s=0.05, heartbeat_period_s=1.0, **faults,
            ),
            max_message_bytes=MT3620.max_message_bytes,
        )  # fmt: skip
        started.append(process)
        return process, CoreClient(process.transport, MT3620)

    yield spawn
    for process in started:
        if process.alive:
            process.kill()
