"""Faults tied to one model version, in a core process (armed through its command line) and in a
core hosted in process: the bad version's self-test fails and the old model keeps running; a
core crashes after N inferences of the bad version, on every boot, while older ones run on."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import (
    CoreClient,
    CoreRefusedError,
    CoreUnavailableError,
    InferenceResult,
)
from firmware.faults import CRASH_EXIT_CODE
from firmware.icc import MessageType, ReasonCode
from tests.integration.firmware.test_core_processes import install, running_version
from tests.unit.firmware.conftest import prebuilt, target_for
from tests.unit.firmware.test_core_host import results

BAD = frozenset({"2.0.0"})


def results_until_lost(client: CoreClient, polls: int) -> list[InferenceResult]:
    seen: list[InferenceResult] = []
    for _ in range(polls):
        if client.lost:
            break
        with contextlib.suppress(CoreUnavailableError):  # the EOF surfaces in a poll
            seen += [e for e in client.poll(0.1) if isinstance(e, InferenceResult)]
    with contextlib.suppress(CoreUnavailableError):
        seen += [e for e in client.poll(0) if isinstance(e, InferenceResult)]  # queued ones
    return seen


def test_the_bad_versions_self_test_fails_and_the_old_model_runs_on(
    spawn_core: Any, tmp_path: Path
) -> None:
    process, client = spawn_core(tmp_path, selftest_fail_models=BAD)
    client.connect()
    install(client, "kws-v1.0.0")
    blob, meta = prebuilt("kws-v2.0.0")
    slot = client.stage(target_for(blob, meta), [blob])
    with pytest.raises(CoreRefusedError) as refused:
        client.activate(slot, confirm_timeout_s=30)
    assert (refused.value.step, refused.value.reason) == (
        MessageType.SELFTEST,
        ReasonCode.SELFTEST_FAILED,
    )
    assert refused.value.detail.startswith("0/")
    assert running_version(client) == ("1.0.0", {"1.0.0"})
    assert process.alive


def test_a_core_crashes_on_the_bad_version_only_and_again_on_every_boot(
    spawn_core: Any, tmp_path: Path
) -> None:
    # 10 at 0.05 s a result: the swap is confirmed long before the new model's crash
    faults = {"crash_after_inferences": 10, "crash_models": BAD}
    process, client = spawn_core(tmp_path, **faults)
    client.connect()
    install(client, "vibration-v1.0.0")
    old = results(client, 15)
    assert not client.lost and len(old) >= 15 and {r.version for r in old} == {"1.0.0"}
    install(client, "vibration-v2.0.0")
    new = [r for r in results_until_lost(client, 600) if r.version == "2.0.0"]
    assert client.lost and process.exit_status(timeout=10) == CRASH_EXIT_CODE
    assert len(new) <= 10
    process, client = spawn_core(tmp_path, **faults)
    running = client.connect().running
    assert running is not None and running.version == "2.0.0"
    assert process.exit_status(timeout=30) == CRASH_EXIT_CODE
