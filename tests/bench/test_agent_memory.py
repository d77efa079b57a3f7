"""The agent's update path holds the same memory for a 4 MB target as for a 40 KB one.

Measured in the agent's process with tracemalloc: the full device check (python-tuf refresh of
both repositories and the Uptane checks), then the target streamed from the store through the
resumable source and the signed-length/sha256 verifier into a real core process over the
inter-core protocol with 1 KB messages. The core runs the real core state machine with a profile
whose RAM is large enough to accept 4 MB (the MT3620's cores would refuse it at BEGIN); the
target bytes are not a model, so the core refuses them at END, after the whole transfer, which is
the part of the update the agent's memory depends on. Figures are printed; the one assertion is
structural (the 4 MB path must not buffer the target), never about time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing
import os
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

from device_agent.intercore import CoreClient, CoreRefusedError, ModelTarget, SeqpacketTransport
from device_agent.target_source import StoreTargetSource, resumable
from firmware._core import CoreConfig, CoreMachine
from firmware._image import FirmwareImage
from firmware._slots import SlotStore
from firmware.core import run as serve_core
from firmware.faults import FaultHooks
from firmware.icc import MT3620, PeerUnresponsiveError
from infra.simdevice import default_firmware
from tests.bench.conftest import FULL
from tests.signing_world import World

KiB, MiB = 1024, 1024 * 1024
PROFILE = dataclasses.replace(MT3620, name="bench-large-core", tcm_bytes=64 * MiB)


def _core_process(fd: int, state: str) -> None:
    sock = socket.socket(fileno=fd)
    config = CoreConfig(
        "m4-0", PROFILE, FirmwareImage.load(default_firmware()), inference_period_s=0
    )
    machine = CoreMachine(
        config, SlotStore(Path(state), FaultHooks(None, None, None)), time.monotonic()
    )
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, PeerUnresponsiveError):
        serve_core(sock, machine, PROFILE.max_message_bytes)


def _peak(world: World, device_id: str, release: str, tmp: Path) -> tuple[int, int]:
    world.director.assign(device_id, "mt3620", release, world.now)
    host, core = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = multiprocessing.get_context("fork").Process(
        target=_core_process, args=(core.fileno(), str(tmp / device_id)), daemon=True
    )
    process.start()
    core.close()
    client = CoreClient(SeqpacketTransport(host, PROFILE.max_message_bytes), PROFILE)
    client.connect()
    device = world.device(device_id)
    source = StoreTargetSource(world.store)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    verified = device.check()
    assert verified is not None
    [target] = [t for t in verified.targets if t.core == "m4-0"]
    checker = target.verifier()

    def chunks():  # type: ignore[no-untyped-def]
        for chunk in resumable(source, target.url_path(), target.length):
            checker.update(chunk)
            yield chunk
        checker.finish()

    model = ModelTarget.from_custom(
        target.fields.raw, length=target.length, sha256=bytes.fromhex(target.sha256)
    )
    with pytest.raises(CoreRefusedError):  # refused at END: the bytes are not a TFLite model
        client.stage(model, chunks())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert checker.received == target.length  # the whole target went over the link
    client.close()
    process.join(timeout=10)
    return peak - base, target.length


def test_agent_update_path_memory_does_not_grow_with_the_target(tmp_path: Path) -> None:
    world = World(tmp_path / "world")
    big = (4 if FULL else 1) * MiB
    for release, version, size in (("small", "1.0.0", 40 * KiB), ("big", "2.0.0", big)):
        path = world.add_model("bench", version, size=size, counter=1)
        world.release(release, [("m4-0", path)])
    small_peak, small_len = _peak(world, "dev-small", "small", tmp_path)
    big_peak, big_len = _peak(world, "dev-big", "big", tmp_path)
    print(
        f"\nagent update path, traced peak above baseline: {small_len // KiB} KiB target "
        f"{small_peak / KiB:.0f} KiB, {big_len // KiB} KiB target {big_peak / KiB:.0f} KiB, "
        f"difference {(big_peak - small_peak) / KiB:.0f} KiB (aim: within 256 KiB); "
        f"pid {os.getpid()}"
    )
    assert big_peak - small_peak < big_len // 4, "the update path must stream, not buffer"
