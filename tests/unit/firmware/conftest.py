"""Fixtures: prebuilt model targets, a core running in a thread behind an in-memory transport
(with faults), and cores hosted on a `CoreReactor` behind datagram pipes, so the real core logic
and the real host client meet without processes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import (
    CoreClient,
    FaultPlan,
    MemoryTransport,
    ModelTarget,
    datagram_pipe,
    memory_pipe,
)
from device_agent.intercore._errors import CoreUnavailableError
from firmware._core import CoreConfig, CoreMachine
from firmware._image import FirmwareImage
from firmware._slots import SlotStore
from firmware.host import CoreBoot, CoreReactor, HostedCore
from firmware.icc import MT3620, DeviceProfile, IccError
from firmware.models import PREBUILT_DIR

IMAGES = Path(__file__).resolve().parents[3] / "firmware" / "images"


def prebuilt(stem: str) -> tuple[bytes, dict[str, object]]:
    return (PREBUILT_DIR / f"{stem}.tflite").read_bytes(), json.loads(
        (PREBUILT_DIR / f"{stem}.json").read_text()
    )


def target_for(blob: bytes, meta: dict[str, object]) -> ModelTarget:
    return ModelTarget.from_custom(meta, length=len(blob), sha256=hashlib.sha256(blob).digest())


def chunks(blob: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(blob), size):
        yield blob[i : i + size]


@dataclass
class ThreadCore:
    """A CoreMachine served by a thread over one end of a memory pipe."""

    machine: CoreMachine
    transport: MemoryTransport
    thread: threading.Thread | None = None
    stop: bool = False
    failure: IccError | None = None  # why the core stopped by itself (e.g. the host went silent)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while not self.stop:
                now = time.monotonic()
                for frame in self.machine.outbound(now):
                    self.transport.send(frame)
                wait = min(0.02, max(0.0, self.machine.next_deadline() - time.monotonic()))
                data = self.transport.recv(wait)
                if data is not None:
                    self.machine.receive(data, time.monotonic())
        except CoreUnavailableError:
            return
        except IccError as exc:  # PeerUnresponsiveError: firmware.core exits with code 3 here
            self.failure = exc

    def close(self) -> None:
        self.stop = True
        self.transport.close()
        if self.thread is not None:
            self.thread.join(timeout=5)


@pytest.fixture
def thread_core(tmp_path: Path) -> Iterator[object]:
    cores: list[ThreadCore] = []

    def make(
        plan: FaultPlan | None = None,
        profile: DeviceProfile = MT3620,
        image: str = "m4-1.0.0.json",
        inference_period_s: float = 0.05,
        core_id: str = "m4-0",
        heartbeat_period_s: float = 1.0,
    ) -> tuple[CoreClient, ThreadCore]:
        host_end, core_end = memory_pipe(plan, plan)
        config = CoreConfig(
            core_id,
            profile,
            FirmwareImage.load(IMAGES / image),
            inference_period_s,
            heartbeat_period_s,
        )
        core = ThreadCore(
            CoreMachine(config, SlotStore(tmp_path / core_id), time.monotonic()), core_end
        )
        core.start()
        cores.append(core)
        return CoreClient(host_end, profile), core

    yield make
    for core in cores:
        core.close()


@pytest.fixture
def reactor() -> Iterator[CoreReactor]:
    with CoreReactor() as host:
        yield host


@pytest.fixture
def hosted_core(tmp_path: Path, reactor: CoreReactor) -> Iterator[Any]:
    """Boot a core on the test's reactor behind a datagram pipe: (client, hosted core)."""
    clients: list[CoreClient] = []

    def boot(
        state: Path = tmp_path,
        core_id: str = "m4-0",
        image: str = "m4-1.0.0.json",
        *,
        capacity: int = 128,
        inference_period_s: float = 0.05,
        heartbeat_period_s: float = 1.0,
        **faults: Any,
    ) -> tuple[CoreClient, HostedCore]:
        transport, port = datagram_pipe(capacity)
        spec = CoreBoot(
            core_id, state, IMAGES / image, "mt3620", inference_period_s, heartbeat_period_s,
            **faults,
        )  # fmt: skip
        core = reactor.boot(spec, port)
        clients.append(CoreClient(transport, MT3620))
        return clients[-1], core

    yield boot
    for client in clients:
        client.close()
