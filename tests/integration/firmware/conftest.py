"""Real cores, started the way a composition root does: core processes on SOCK_SEQPACKET socket
pairs, and the same cores hosted in process on a `CoreReactor` behind datagram pipes. Every test
here runs against both (`spawn_core` is parametrised by mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import CoreClient, CoreProcess, datagram_pipe
from firmware.core import command_line
from firmware.host import CoreBoot, CoreReactor
from firmware.icc import MT3620
from infra.simdevice import InProcessCore
from tests.unit.firmware.conftest import IMAGES


@pytest.fixture(params=["process", "inprocess"])
def spawn_core(request: pytest.FixtureRequest) -> Iterator[Any]:
    started: list[CoreProcess | InProcessCore] = []
    reactor = CoreReactor() if request.param == "inprocess" else None

    def spawn(
        state: Path, core_id: str = "m4-0", image: str = "m4-1.0.0.json", **faults: Any
    ) -> tuple[CoreProcess | InProcessCore, CoreClient]:
        if reactor is not None:
            transport, port = datagram_pipe()
            boot = CoreBoot(
                core_id, state, IMAGES / image, "mt3620", inference_period_s=0.05,
                heartbeat_period_s=1.0, **faults,
            )  # fmt: skip
            core: CoreProcess | InProcessCore = InProcessCore(reactor.boot(boot, port), transport)
        else:
            core = CoreProcess.spawn(
                lambda fd: command_line(
                    core_id=core_id, state_dir=state, firmware=IMAGES / image, fd=fd,
                    profile="mt3620", inference_period_s=0.05, heartbeat_period_s=1.0, **faults,
                ),
                max_message_bytes=MT3620.max_message_bytes,
            )  # fmt: skip
        started.append(core)
        return core, CoreClient(core.transport, MT3620)

    yield spawn
    for core in started:
        if core.alive:
            core.kill()
    if reactor is not None:
        reactor.close()
