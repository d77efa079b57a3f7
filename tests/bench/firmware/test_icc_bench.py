"""ICC transfer throughput with 1 KB messages, and swap time BEGIN -> CONFIRM for a ~50 KB model,
as ratios to a raw SOCK_SEQPACKET baseline measured in the same run. Figures, not assertions."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import ModelTarget
from firmware.models import ModelSpec, build

FULL = os.environ.get("TINYFLEET_BENCH_FULL") == "1"


def _raw_seqpacket_bytes_per_s(total: int) -> float:
    """1 KB messages through a socket pair to a reader thread: the transport's ceiling."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    message = bytes(1024)
    count = total // 1024

    def drain() -> None:
        for _ in range(count):
            b.recv(2048)

    reader = threading.Thread(target=drain)
    reader.start()
    started = time.perf_counter()
    for _ in range(count):
        a.send(message)
    reader.join()
    elapsed = time.perf_counter() - started
    a.close()
    b.close()
    return count * 1024 / elapsed


@pytest.mark.bench
def test_icc_throughput_and_swap_time(spawn_core: Any, tmp_path: Path) -> None:
    model = build(ModelSpec("kws", "9.0.0", (100,), 600, 1, seed=9))  # ~50 KB of weights
    blob = model.tflite
    target = ModelTarget.from_custom(
        model.sidecar, length=len(blob), sha256=hashlib.sha256(blob).digest()
    )
    rounds = 5 if FULL else 2
    raw = max(_raw_seqpacket_bytes_per_s(len(blob) * 4) for _ in range(rounds))
    _, client = spawn_core(tmp_path)
    client.connect()
    transfers, swaps = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        slot = client.stage(target, [blob[i : i + 4096] for i in range(0, len(blob), 4096)])
        staged = time.perf_counter()
        client.activate(slot, confirm_timeout_s=30)
        client.confirm(slot)
        transfers.append(staged - started)
        swaps.append(time.perf_counter() - started)
    icc = len(blob) / min(transfers)
    print(
        f"\n[bench icc] model {len(blob)} B; raw seqpacket {raw / 1e6:.1f} MB/s; "
        f"ICC stage {icc / 1e6:.2f} MB/s (ratio {icc / raw:.3f} of raw); "
        f"swap BEGIN->CONFIRM {min(swaps) * 1000:.1f} ms "
        f"(= {min(swaps) * raw / len(blob):.0f}x the raw time to move the bytes)"
    )
    assert client.status().running is not None
