"""Real cores, as processes and hosted in process: install, swap, refuse bad releases with
reason codes, and survive being killed at every message boundary and every crash point of a
swap (in process, the fault hooks drop the core instead of exiting the process)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import (
    CoreClient,
    CoreRefusedError,
    CoreUnavailableError,
    InferenceResult,
    ModelTarget,
)
from firmware.faults import CRASH_EXIT_CODE, CRASH_POINTS
from firmware.icc import MessageType, ReasonCode
from tests.unit.firmware.conftest import prebuilt, target_for


def install(client: CoreClient, stem: str) -> int:
    blob, meta = prebuilt(stem)
    slot = client.stage(target_for(blob, meta), [blob])
    client.activate(slot, confirm_timeout_s=30)
    client.confirm(slot)
    return slot


def running_version(client: CoreClient) -> tuple[str | None, set[str]]:
    """(version the status reports, versions seen in inference results after it)."""
    client.poll(0)  # drop results produced before the swap
    status = client.status()
    seen: set[str] = set()
    for _ in range(30):
        seen |= {e.version for e in client.poll(0.1) if isinstance(e, InferenceResult)}
        if seen:
            break
    return (status.running.version if status.running else None), seen


def test_two_cores_install_and_swap_and_report_results(spawn_core: Any, tmp_path: Path) -> None:
    clients = [spawn_core(tmp_path, core_id)[1] for core_id in ("m4-0", "m4-1")]
    for client, line in zip(clients, ("kws", "vibration"), strict=True):
        client.connect()
        install(client, f"{line}-v1.0.0")
        install(client, f"{line}-v2.0.0")
        assert running_version(client) == ("2.0.0", {"2.0.0"})
    assert {c.status().core_id for c in clients} == {"m4-0", "m4-1"}


def _bad_vector(blob: bytes, meta: dict[str, Any]) -> tuple[ModelTarget, bytes]:
    vector = meta["selfTest"][0]
    wrong = bytes((b + 50) % 256 for b in base64.b64decode(vector["expected"]))
    bad = {**vector, "expected": base64.b64encode(wrong).decode()}
    return target_for(blob, {**meta, "selfTest": [bad]}), blob


def _oversized(blob: bytes, meta: dict[str, Any]) -> tuple[ModelTarget, bytes]:
    return dataclasses.replace(target_for(blob, meta), length=250_000), blob


_END, _BEGIN, _R = MessageType.END, MessageType.BEGIN, ReasonCode


def _flip(b: bytes) -> bytes:
    return b[:100] + bytes([b[100] ^ 1]) + b[101:]


BAD = {
    "corrupt-blob": (lambda b, m: (target_for(b, m), _flip(b)), _END, _R.HASH_MISMATCH),
    "wrong-hash": (
        lambda b, m: (dataclasses.replace(target_for(b, m), sha256=bytes(32)), b),
        _END,
        _R.HASH_MISMATCH,
    ),
    "truncated-download": (lambda b, m: (target_for(b, m), b[:-100]), _END, _R.LENGTH_MISMATCH),
    "oversized-model": (_oversized, _BEGIN, _R.BUDGET_EXCEEDED),
    "unsupported-operator": (
        lambda b, m: (target_for(b, {**m, "operators": ["FULLY_CONNECTED", "CONV_2D"]}), b),
        _BEGIN,
        _R.OPERATOR_UNSUPPORTED,
    ),
    "firmware-too-old": (
        lambda b, m: (target_for(b, {**m, "minFirmwareVersion": "1.1.0"}), b),
        _BEGIN,
        _R.FIRMWARE_TOO_OLD,
    ),
    "failing-self-test": (_bad_vector, MessageType.SELFTEST, _R.SELFTEST_FAILED),
}


@pytest.mark.parametrize(("make", "step", "reason"), BAD.values(), ids=BAD.keys())
def test_bad_releases_are_refused_with_a_reason_and_the_old_model_keeps_running(
    spawn_core: Any, tmp_path: Path, make: Any, step: MessageType, reason: ReasonCode
) -> None:
    _, client = spawn_core(tmp_path)
    client.connect()
    install(client, "vibration-v1.0.0")
    blob, meta = prebuilt("vibration-v2.0.0")
    target, payload = make(blob, meta)
    with pytest.raises(CoreRefusedError) as refused:
        slot = client.stage(target, [payload])
        client.activate(slot)
    assert (refused.value.step, refused.value.reason) == (step, reason)
    assert running_version(client) == ("1.0.0", {"1.0.0"})


def _template(spawn_core: Any, root: Path) -> Path:
    template = root / "template"
    process, client = spawn_core(template)
    client.connect()
    install(client, "vibration-v1.0.0")
    process.stop()
    return template


SWAP_MESSAGES = 11  # BEGIN, 4 VECTOR, 3 DATA, END, ACTIVATE, CONFIRM for vibration v1 -> v2
CASES = (
    [("crash_point", p) for p in CRASH_POINTS]
    + [("crash_before_message", n) for n in range(1, SWAP_MESSAGES + 1)]
    + [("crash_after_message", n) for n in range(1, SWAP_MESSAGES + 1)]
)


def test_killing_the_core_anywhere_in_a_swap_leaves_a_working_model_that_matches_its_report(
    spawn_core: Any, tmp_path: Path
) -> None:
    template = _template(spawn_core, tmp_path)
    outcomes: dict[str, str] = {}
    for kind, value in CASES:
        state = tmp_path / f"{kind}-{value}"
        shutil.copytree(template, state)
        process, client = spawn_core(state, **{kind: value})
        client.connect()
        with pytest.raises(CoreUnavailableError):
            install(client, "vibration-v2.0.0")
            client.status()  # a crash after the last message shows on the next call
        assert process.exit_status(timeout=10) == CRASH_EXIT_CODE, (kind, value)
        process.transport.close()
        restarted, client = spawn_core(state)
        client.connect()
        reported, seen = running_version(client)
        assert reported in ("1.0.0", "2.0.0") and seen == {reported}, (kind, value, reported, seen)
        assert client.status().trial_slot is None
        outcomes[f"{kind}={value}"] = reported
        restarted.stop()
    # Crashes before the confirmation was recorded keep v1; after it, v2.
    assert outcomes["crash_before_message=11"] == "1.0.0"
    assert outcomes["crash_after_message=11"] == "2.0.0"


class _AgentDies(Exception):
    pass


class _DyingTransport:
    """Passes frames through, and 'kills the agent' after it sent `budget` request frames."""

    def __init__(self, inner: Any, budget: int) -> None:
        self.inner, self.budget = inner, budget

    def send(self, data: bytes) -> None:
        if data[3] != MessageType.WINDOW and data[2] & 0x1:
            if self.budget == 0:
                raise _AgentDies
            self.budget -= 1
        self.inner.send(data)

    def recv(self, timeout: float) -> bytes | None:
        return self.inner.recv(timeout)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("budget", range(SWAP_MESSAGES), ids=lambda n: f"after-{n}-messages")
def test_a_restarted_agent_finds_the_core_consistent_and_can_finish_the_swap(
    spawn_core: Any, tmp_path: Path, budget: int
) -> None:
    process, client = spawn_core(tmp_path)
    client.connect()
    install(client, "vibration-v1.0.0")
    client.detach()  # one client reads the socket at a time
    dying = CoreClient(_DyingTransport(process.transport, budget), client.profile)
    dying.connect()
    with pytest.raises(_AgentDies):
        install(dying, "vibration-v2.0.0")
    dying.detach()  # the agent died: nothing services its link any more
    fresh = CoreClient(process.transport, client.profile)
    status = fresh.connect()
    assert status.state in ("running", "trial")
    if status.trial_slot is not None:
        fresh.confirm(status.trial_slot)
    else:
        install(fresh, "vibration-v2.0.0")
    assert running_version(fresh) == ("2.0.0", {"2.0.0"})


def test_a_core_armed_to_crash_after_n_inferences_sends_n_results_then_dies(
    spawn_core: Any, tmp_path: Path
) -> None:
    state = tmp_path / "cores"
    process, client = spawn_core(state, crash_after_inferences=3)
    client.connect()  # no model yet: nothing runs, nothing crashes
    install(client, "vibration-v2.0.0")
    results: list[InferenceResult] = []
    for _ in range(600):  # at most a minute
        if client.lost:
            break
        with contextlib.suppress(CoreUnavailableError):  # the EOF surfaces in a poll
            results += [e for e in client.poll(0.1) if isinstance(e, InferenceResult)]
    results += [e for e in client.poll(0) if isinstance(e, InferenceResult)]  # queued ones
    assert client.lost and process.exit_status(timeout=10) == CRASH_EXIT_CODE
    assert [r.counter for r in results] == [1, 2, 3]
    # Every boot crashes again after 3 inferences: a crashing model, not a one-off fault.
    process, client = spawn_core(state, crash_after_inferences=3)
    client.connect()
    assert process.exit_status(timeout=30) == CRASH_EXIT_CODE
