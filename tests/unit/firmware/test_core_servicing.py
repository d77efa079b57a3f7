"""A busy agent does not starve its cores: while one core receives a model, the other core's
frames (heartbeats, inference results) are still acknowledged, so it never declares the host
dead. Both cores are real core machines in threads, wired to real clients in memory."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from device_agent.intercore import CoreHeartbeat, InferenceResult
from firmware.icc import MT3620
from tests.unit.firmware.conftest import prebuilt, target_for

# A core that gives up after 4 x 0.05 s without an acknowledgement: starvation shows at once.
IMPATIENT = replace(MT3620, retransmit_timeout_s=0.05, max_retransmits=4)


def test_one_core_keeps_heartbeating_while_the_other_stages_a_large_model(
    thread_core: Any,
) -> None:
    busy, _ = thread_core(profile=IMPATIENT, core_id="m4-0")
    other, other_core = thread_core(
        profile=IMPATIENT, core_id="m4-1", inference_period_s=0.01, heartbeat_period_s=0.02
    )
    busy.connect()
    other.connect()
    blob, meta = prebuilt("vibration-v1.0.0")
    other.confirm(other.activate(other.stage(target_for(blob, meta), [blob])).slot)
    seen = other_core.machine.inferences
    big, big_meta = prebuilt("kws-v1.0.0")
    enough = threading.Event()

    def slow_chunks() -> Iterator[bytes]:
        # The agent's download stalls mid-transfer (a slow network) until the other core has
        # run 100 more inferences (well past its patience), or has given up on the host.
        for i in range(0, len(big), 512):
            if i == 4096:
                while not enough.wait(0.01):
                    if other_core.machine.inferences >= seen + 100 or other_core.failure:
                        enough.set()
            yield big[i : i + 512]

    slot = busy.stage(target_for(big, big_meta), slow_chunks())
    assert other_core.failure is None, f"the link was declared dead: {other_core.failure}"
    assert busy.activate(slot).passed
    events = other.poll(0.5)
    assert any(isinstance(e, InferenceResult) for e in events)
    assert other_core.thread is not None and other_core.thread.is_alive()
    heartbeats = [e for e in events if isinstance(e, CoreHeartbeat)]
    assert heartbeats and heartbeats[-1].core_id == "m4-1"


def test_close_stops_the_pump_and_the_core_sees_eof(thread_core: Any) -> None:
    client, core = thread_core()
    client.connect()
    pump = client._pump_thread
    assert pump is not None and pump.is_alive()
    client.close()
    assert not pump.is_alive()
    assert core.thread is not None
    core.thread.join(timeout=5)
    assert not core.thread.is_alive() and core.failure is None
