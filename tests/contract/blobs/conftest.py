"""Blob store adapters under one fixture: memory and filesystem (each served by a `BlobServer` on
a free port) and Azure Blob Storage against Azurite (installed by `make setup` under `.tools/`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.clock_shift import wrap_command
from service.blobs import (
    AzureBlobStore,
    BlobServer,
    BlobStore,
    FilesystemBlobStore,
    MemoryBlobStore,
)

REPO = Path(__file__).resolve().parents[3]
AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account; public by design, valid only against the emulator.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
KEY = b"k" * 32
ADAPTERS = ["memory", "filesystem", "azurite"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Azurite:
    port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{DEV_ACCOUNT};"
        )

    def store(self) -> AzureBlobStore:
        return AzureBlobStore.from_connection_string(
            self.connection_string, f"c{uuid.uuid4().hex[:20]}"
        )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not AZURITE.exists():
        pytest.fail(f"{AZURITE} is missing: run `make setup` (npm install --prefix .tools azurite)")
    if shutil.which("node") is None:
        pytest.fail("Azurite needs Node.js on PATH")
    location = tmp_path_factory.mktemp("azurite")
    port = _free_port()
    process = subprocess.Popen(
        wrap_command(  # Node cannot take the in-process clock shift: libfaketime moves it
            [
                str(AZURITE),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(location),
                "--skipApiVersionCheck",
                "--disableTelemetry",  # it would otherwise call out to Application Insights
                "--silent",
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"azurite-blob exited with {process.returncode}: {err[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("azurite-blob did not listen within 30 s")
                time.sleep(0.1)
        yield Azurite(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


Clock = Callable[[], float]


@dataclass
class Served:
    """A store plus, for local adapters, the server and a settable clock for expiry tests."""

    store: BlobStore
    kind: str
    now: list[float]


@pytest.fixture(params=ADAPTERS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    kind: str = request.param
    if kind == "azurite":
        yield Served(request.getfixturevalue("azurite").store(), kind, [time.time()])
        return
    now = [time.time()]

    def clock() -> float:
        return now[0]

    with BlobServer(KEY, clock=clock) as server:
        signer = server.signer()
        store: BlobStore = (
            MemoryBlobStore(signer, clock)
            if kind == "memory"
            else FilesystemBlobStore(tmp_path / "blobs", signer, clock)
        )
        server.start(store)
        yield Served(store, kind, now)


@pytest.fixture
def store(served: Served) -> BlobStore:
    return served.store
