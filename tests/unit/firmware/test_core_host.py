"""Cores hosted in process on one reactor: each boots from its own slot files, installs, tests
and runs real models, survives a power cut exactly like a core process, and costs no wake-ups
while it has nothing to do. Real core machines, real clients, real TFLM; no processes."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from device_agent.intercore import (
    CoreClient,
    CoreHeartbeat,
    CoreUnavailableError,
    InferenceResult,
    datagram_pipe,
)
from firmware.faults import CRASH_EXIT_CODE
from firmware.host import KILLED, CoreBoot, CoreReactor
from firmware.icc import MT3620, ReasonCode
from tests.unit.firmware.conftest import IMAGES, prebuilt, target_for


def install(client: CoreClient, stem: str, *, confirm: bool = True) -> int:
    blob, meta = prebuilt(stem)
    slot = client.stage(target_for(blob, meta), [blob])
    assert client.activate(slot, confirm_timeout_s=30).passed
    if confirm:
        client.confirm(slot)
    return slot


def results(client: CoreClient, count: int = 1) -> list[InferenceResult]:
    seen: list[InferenceResult] = []
    for _ in range(100):
        seen += [e for e in client.poll(0.1) if isinstance(e, InferenceResult)]
        if len(seen) >= count:
            break
    return seen


def test_a_hosted_core_stages_activates_self_tests_and_runs_inference(hosted_core: Any) -> None:
    client, core = hosted_core()
    assert client.connect().state == "empty"
    install(client, "kws-v1.0.0")
    status = client.status()
    assert status.running is not None and status.running.version == "1.0.0"
    seen = results(client, 3)
    assert len(seen) >= 3 and {r.model_id for r in seen} == {"kws"}
    assert core.alive and core.exit_status() is None


def test_a_power_cut_during_a_trial_reverts_at_the_next_boot(hosted_core: Any) -> None:
    client, core = hosted_core()
    client.connect()
    install(client, "vibration-v1.0.0")
    install(client, "vibration-v2.0.0", confirm=False)  # on trial, not confirmed
    assert client.status().trial_slot is not None
    assert core.kill() == KILLED
    for _ in range(100):  # the pump or a poll finds the EOF
        if client.lost:
            break
        with contextlib.suppress(CoreUnavailableError):
            client.poll(0.1)
    assert client.lost and core.exit_status() == KILLED

    again, _ = hosted_core()
    status = again.connect()
    assert status.trial_slot is None and status.last_reason == ReasonCode.REVERTED_ON_BOOT.name
    assert status.running is not None and status.running.version == "1.0.0"
    assert {r.version for r in results(again, 2)} == {"1.0.0"}


def test_a_confirmed_model_survives_the_power_cut_and_boots_again(hosted_core: Any) -> None:
    client, core = hosted_core()
    client.connect()
    install(client, "kws-v1.0.0")
    install(client, "kws-v2.0.0")
    core.kill()
    again, _ = hosted_core()
    running = again.connect().running
    assert running is not None and running.version == "2.0.0"


def test_closing_the_agent_end_is_eof_and_the_core_exits_cleanly(hosted_core: Any) -> None:
    client, core = hosted_core()
    client.connect()
    client.close()
    assert core.exit_status(timeout=10) == 0


@pytest.mark.parametrize(
    ("fault", "value"),
    [("crash_point", "activate:recorded"), ("crash_before_message", 3)],
    ids=["crash-point", "crash-before-message"],
)
def test_a_fault_hook_drops_only_its_own_core(
    hosted_core: Any, tmp_path: Path, fault: str, value: Any
) -> None:
    other, other_core = hosted_core(tmp_path / "b", core_id="m4-1")
    other.connect()
    install(other, "vibration-v1.0.0")
    client, core = hosted_core(tmp_path / "a", **{fault: value})
    client.connect()
    with pytest.raises(CoreUnavailableError):
        install(client, "kws-v1.0.0")
    assert core.exit_status(timeout=10) == CRASH_EXIT_CODE
    assert other_core.alive and results(other, 2)  # the reactor serves the others on


def test_a_core_that_cannot_boot_exits_2_and_its_agent_sees_eof(
    hosted_core: Any, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_text("{}")
    client, core = hosted_core(image=str(tmp_path / "bad.json"))
    with pytest.raises(CoreUnavailableError):
        client.connect()
    assert core.exit_status(timeout=10) == 2


def test_cores_running_the_same_model_share_one_interpreter(
    hosted_core: Any, reactor: CoreReactor, tmp_path: Path
) -> None:
    clients = [hosted_core(tmp_path / f"d{i}", core_id="m4-0")[0] for i in range(3)]
    for client in clients:
        client.connect()
        install(client, "vibration-v2.0.0")
    odd, _ = hosted_core(tmp_path / "odd", core_id="m4-1")
    odd.connect()
    install(odd, "kws-v1.0.0")
    assert len(reactor.interpreters) == 2  # one per (model, arena): vibration v2, kws v1
    for client in [*clients, odd]:
        assert results(client, 2)  # every core still runs its own inference through it


def test_an_idle_reactor_sleeps_until_a_deadline(hosted_core: Any, reactor: CoreReactor) -> None:
    client, _ = hosted_core(inference_period_s=0.0, heartbeat_period_s=0.05)
    client.connect()
    start = reactor.wakeups
    beats = 0
    for _ in range(200):
        beats += sum(isinstance(e, CoreHeartbeat) for e in client.poll(0.1))
        if beats >= 10:
            break
    # Each heartbeat costs a few turns (its deadline, the agent's acknowledgement); a reactor
    # that polled would turn hundreds of times per heartbeat.
    assert beats >= 10 and reactor.wakeups - start < 10 * beats


def test_datagram_pipe_keeps_order_back_pressure_and_eof() -> None:
    agent, core = datagram_pipe(capacity=2)
    woken = threading.Event()
    core.set_waker(woken.set)
    agent.send(b"1")
    agent.send(b"2")
    assert woken.is_set()
    sent = threading.Event()
    third = threading.Thread(target=lambda: (agent.send(b"3"), sent.set()), daemon=True)
    third.start()
    assert not sent.wait(0.05)  # blocked: the core's side is full
    assert core.take() == b"1"
    assert sent.wait(5)
    assert [core.take(), core.take(), core.take()] == [b"2", b"3", None]
    assert core.offer(b"a") and core.offer(b"b") and not core.offer(b"c")  # the agent's side
    core.close()
    assert [agent.recv(1), agent.recv(1)] == [b"a", b"b"]  # queued messages first, then EOF
    with pytest.raises(CoreUnavailableError):
        agent.recv(1)
    with pytest.raises(CoreUnavailableError):
        agent.send(b"x")


def test_the_agent_closing_its_end_is_seen_by_the_core_after_its_messages() -> None:
    agent, core = datagram_pipe()
    agent.send(b"last")
    agent.close()
    assert core.peer_closed and core.take() == b"last" and core.take() is None
    with contextlib.suppress(CoreUnavailableError):
        agent.recv(0)
    with pytest.raises(CoreUnavailableError):
        agent.recv(0)


def test_a_reactor_refuses_boots_once_closed(tmp_path: Path) -> None:
    reactor = CoreReactor()
    reactor.close()
    _, port = datagram_pipe()
    boot = CoreBoot("m4-0", tmp_path, IMAGES / "m4-1.0.0.json", "mt3620")
    with pytest.raises(RuntimeError, match="closed"):
        reactor.boot(boot, port)
    assert MT3620.max_message_bytes  # the profile the boots use
