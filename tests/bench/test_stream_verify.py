"""Streaming target verification: throughput against plain hashlib, and peak memory.

Figures are ratios against a baseline measured in the same process over the same bytes; nothing
here asserts on time. Full run: `make bench` (64 MiB for memory, 256 MiB for throughput).
"""

from __future__ import annotations

import gc
import hashlib
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from signing.store import DirectoryStore
from signing.stream import TargetStreamVerifier
from tests.bench.conftest import FULL

MiB = 1024 * 1024
CHUNK = 64 * 1024


def _chunks(total: int, block: bytes) -> Iterator[memoryview]:
    view = memoryview(block)
    for _ in range(total // len(block)):
        for i in range(0, len(block), CHUNK):
            yield view[i : i + CHUNK]


def _best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def test_streaming_verifier_throughput_against_hashlib() -> None:
    total = (256 if FULL else 16) * MiB
    block = hashlib.sha256(b"bench").digest() * (MiB // 32)
    expected = hashlib.sha256()
    for chunk in _chunks(total, block):
        expected.update(chunk)
    sha = expected.hexdigest()

    def baseline() -> str:
        digest = hashlib.sha256()
        for chunk in _chunks(total, block):
            digest.update(chunk)
        return digest.hexdigest()

    def ours() -> str:
        verifier = TargetStreamVerifier("bench.bin", total, sha)
        for chunk in _chunks(total, block):
            verifier.update(chunk)
        return verifier.finish().sha256

    assert ours() == baseline() == sha
    base_s, ours_s = _best_of(5, baseline), _best_of(5, ours)
    ratio = base_s / ours_s
    print(
        f"\nstream verify {total // MiB} MiB in {CHUNK // 1024} KiB chunks: hashlib "
        f"{total / MiB / base_s:.0f} MiB/s, verifier {total / MiB / ours_s:.0f} MiB/s, "
        f"throughput ratio {ratio:.3f} (aim >= 0.9)"
    )


def _peak_above_baseline(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - base


def test_peak_memory_verifying_a_large_target_from_a_store(tmp_path: Path) -> None:
    total = (64 if FULL else 8) * MiB
    block = hashlib.sha256(b"mem").digest() * (MiB // 32)
    store = DirectoryStore(tmp_path)
    store.put("image/targets/models/big/blob.bin", (bytes(c) for c in _chunks(total, block)))
    digest = hashlib.sha256()
    for chunk in store.get("image/targets/models/big/blob.bin"):
        digest.update(chunk)
    sha = digest.hexdigest()

    def verify() -> None:
        verifier = TargetStreamVerifier("blob.bin", total, sha)
        for chunk in store.get("image/targets/models/big/blob.bin"):
            verifier.update(chunk)
        verifier.finish()

    def hash_only() -> None:
        h = hashlib.sha256()
        for chunk in store.get("image/targets/models/big/blob.bin"):
            h.update(chunk)

    ours = _peak_above_baseline(verify)
    baseline = _peak_above_baseline(hash_only)
    print(
        f"\npeak traced memory verifying {total // MiB} MiB from a directory store: "
        f"{ours / 1024:.0f} KiB above baseline (plain hashing of the same stream: "
        f"{baseline / 1024:.0f} KiB; aim < 1024 KiB)"
    )
    assert ours < total // 4, "the verifier must stream, not buffer the target"
