"""Faults tied to one model version, as a hardware revision or sensor variant shows them: a core
whose self-test of that version fails (the test runs, its numbers come out beyond tolerance),
and a core that crashes after N inferences of that version on every boot while older models
run on. The hooks alone, then real cores hosted on a reactor (a fired hook drops the core)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import CoreRefusedError, CoreUnavailableError, InferenceResult
from firmware.faults import CRASH_EXIT_CODE, CoreHalted, FaultHooks, halt
from firmware.icc import MessageType, ReasonCode
from tests.unit.firmware.conftest import prebuilt, target_for
from tests.unit.firmware.test_core_host import install, results

BAD = frozenset({"2.0.0"})


def run(hooks: FaultHooks, version: str, count: int) -> int:
    """How many inferences of `version` start before the hooks halt the core."""
    for started in range(count):
        try:
            hooks.inference_starting(version)
        except CoreHalted:
            return started
    return count


@pytest.mark.parametrize(
    ("crash_models", "version", "expected"),
    [(None, "1.0.0", 3), (BAD, "2.0.0", 3), (BAD, "1.0.0", 50)],
    ids=["any-model", "the-bad-version", "another-version-never"],
)
def test_the_inference_crash_hits_only_the_versions_it_names(
    crash_models: frozenset[str] | None, version: str, expected: int
) -> None:
    hooks = FaultHooks(crash_after_inferences=3, crash_models=crash_models, die=halt)
    assert run(hooks, version, 50) == expected


def test_inferences_of_an_older_model_do_not_bring_the_crash_closer() -> None:
    hooks = FaultHooks(crash_after_inferences=2, crash_models=BAD, die=halt)
    assert run(hooks, "1.0.0", 10) == 10
    assert run(hooks, "2.0.0", 10) == 2  # swapped in the same boot: two more, then the crash


@pytest.mark.parametrize(
    "hooks",
    [
        {"crash_models": frozenset({""})},
        {"selftest_fail_models": frozenset({""})},
        {"crash_after_inferences": -1},
    ],
    ids=["empty-crash-version", "empty-selftest-version", "negative-count"],
)
def test_bad_fault_settings_are_refused(hooks: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultHooks(**hooks)


def test_the_self_test_of_the_bad_version_fails_and_the_old_model_runs_on(
    hosted_core: Any,
) -> None:
    client, core = hosted_core(selftest_fail_models=BAD)
    client.connect()
    install(client, "vibration-v1.0.0")  # an older version passes its self-test
    blob, meta = prebuilt("vibration-v2.0.0")
    slot = client.stage(target_for(blob, meta), [blob])
    with pytest.raises(CoreRefusedError) as refused:
        client.activate(slot, confirm_timeout_s=30)
    assert (refused.value.step, refused.value.reason) == (
        MessageType.SELFTEST,
        ReasonCode.SELFTEST_FAILED,
    )
    # both vectors ran and none is within its tolerance (2 for this model)
    assert refused.value.detail.startswith("0/2 vectors passed, max diff ")
    assert int(refused.value.detail.rsplit(" ", 1)[1]) > 2
    status = client.status()
    assert status.running is not None and status.running.version == "1.0.0"
    assert status.last_reason == ReasonCode.SELFTEST_FAILED.name
    assert {r.version for r in results(client, 3)} == {"1.0.0"} and core.alive


def test_a_core_crashes_after_n_inferences_of_the_bad_version_on_every_boot(
    hosted_core: Any, tmp_path: Path
) -> None:
    # 10 at 0.05 s a result: the swap is confirmed long before the new model's crash
    faults = {"crash_after_inferences": 10, "crash_models": BAD}
    client, core = hosted_core(**faults)
    client.connect()
    install(client, "kws-v1.0.0")
    old = results(client, 15)  # more than 10: the old model runs on
    assert len(old) >= 15 and {r.version for r in old} == {"1.0.0"} and core.alive
    install(client, "kws-v2.0.0")
    seen: list[InferenceResult] = []
    for _ in range(300):
        if client.lost:
            break
        with contextlib.suppress(CoreUnavailableError):
            seen += [e for e in client.poll(0.1) if isinstance(e, InferenceResult)]
    assert client.lost and core.exit_status(timeout=10) == CRASH_EXIT_CODE
    assert len([r for r in seen if r.version == "2.0.0"]) <= 10
    # the next boot runs the confirmed v2 and crashes again: the model, not a one-off fault
    again, rebooted = hosted_core(**faults)
    running = again.connect().running
    assert running is not None and running.version == "2.0.0"
    assert rebooted.exit_status(timeout=30) == CRASH_EXIT_CODE
