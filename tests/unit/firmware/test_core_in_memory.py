"""The real core logic and the real host client, wired in memory, under link faults."""

from __future__ import annotations

from typing import Any

import pytest

from device_agent.intercore import CoreRefusedError, CoreStateError, FaultPlan, InferenceResult
from firmware.icc import LINUX_A7_M4, ReasonCode
from tests.unit.firmware.conftest import chunks, prebuilt, target_for

PLANS = {
    "clean": None,
    "drop": FaultPlan(drop=0.1, seed=11),
    "duplicate": FaultPlan(duplicate=0.2, seed=12),
    "reorder": FaultPlan(reorder=0.2, reorder_s=0.02, seed=13),
    "split": FaultPlan(split=0.1, seed=14),
    "corrupt": FaultPlan(corrupt=0.1, seed=15),
    "delay": FaultPlan(delay_s=0.005, seed=16),
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
def test_a_model_installs_and_runs_through_a_faulty_link(
    thread_core: Any, plan: FaultPlan | None
) -> None:
    client, _ = thread_core(plan)
    assert client.connect().state == "empty"
    blob, meta = prebuilt("vibration-v2.0.0")
    slot = client.stage(target_for(blob, meta), chunks(blob, 700))
    report = client.activate(slot, confirm_timeout_s=30)
    assert report.passed and report.vectors_total == 2
    client.confirm(slot)
    status = client.status()
    assert status.running is not None and (status.running.model_id, status.running.version) == (
        "vibration",
        "2.0.0",
    )
    results = [e for e in client.poll(2.0) if isinstance(e, InferenceResult)]
    assert results and results[0].model_id == "vibration"


def test_the_smaller_rpmsg_profile_splits_vectors_and_data(thread_core: Any) -> None:
    client, _ = thread_core(profile=LINUX_A7_M4)
    client.connect()
    blob, meta = prebuilt("kws-v2.0.0")  # 490-byte input vectors do not fit one 496-byte message
    slot = client.stage(target_for(blob, meta), [blob])
    assert client.activate(slot).passed


def test_calls_out_of_order_name_the_state(thread_core: Any) -> None:
    client, _ = thread_core()
    client.connect()
    with pytest.raises(CoreStateError, match="cannot activate while the core is ready"):
        client.activate(0)
    with pytest.raises(CoreStateError, match="cannot confirm while the core is ready"):
        client.confirm(0)


def test_a_trial_without_confirm_reverts_by_itself(thread_core: Any) -> None:
    client, _ = thread_core()
    client.connect()
    for stem in ("kws-v1.0.0", "kws-v2.0.0"):
        blob, meta = prebuilt(stem)
        slot = client.stage(target_for(blob, meta), [blob])
        client.activate(slot, confirm_timeout_s=0.3 if stem.endswith("2.0.0") else 30)
        if stem.endswith("1.0.0"):
            client.confirm(slot)
    reverted = []
    for _ in range(40):
        reverted += [e for e in client.poll(0.1) if type(e).__name__ == "CoreReverted"]
        if reverted:
            break
    assert reverted and reverted[0].reason == ReasonCode.CONFIRM_TIMEOUT.name
    running = client.status().running
    assert running is not None and running.version == "1.0.0"


def test_an_iterator_failure_aborts_the_transfer_and_keeps_the_old_model(thread_core: Any) -> None:
    client, core = thread_core()
    client.connect()
    blob, meta = prebuilt("kws-v1.0.0")
    client.confirm(client.activate(client.stage(target_for(blob, meta), [blob])).slot)

    def broken() -> Any:
        yield blob[:2000]
        raise OSError("download dropped")

    blob2, meta2 = prebuilt("kws-v2.0.0")
    with pytest.raises(OSError, match="download dropped"):
        client.stage(target_for(blob2, meta2), broken())
    status = client.status()
    assert (
        status.state == "running"
        and status.running is not None
        and status.running.version == "1.0.0"
    )
    assert not list(core.machine.store.directory.glob("*.partial"))


def test_rollback_of_a_confirmed_model_and_nothing_to_revert(thread_core: Any) -> None:
    client, _ = thread_core()
    client.connect()
    with pytest.raises(CoreRefusedError) as refused:
        client.revert()
    assert refused.value.reason == ReasonCode.NOTHING_TO_REVERT
    for stem in ("vibration-v1.0.0", "vibration-v3.0.0"):
        blob, meta = prebuilt(stem)
        client.confirm(client.activate(client.stage(target_for(blob, meta), [blob])).slot)
    assert client.revert() is not None
    running = client.status().running
    assert running is not None and running.version == "1.0.0"
