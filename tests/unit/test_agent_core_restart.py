"""The agent restarts a core whose link is gone, through its host, with back-off on its own
clock: 1 s, then doubling, capped; every restart is a log line. Each loss of a core is exactly
one crash event, emitted when the agent sees it (restart or not), with the exit status and the
model the core ran; a core that boots back into its previous model (a trial interrupted by the
crash) is also a revert event. The cores are real core machines in threads behind in-memory
transports; the host is an in-memory one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.agent import Agent
from device_agent.intercore import EXIT_UNKNOWN, HostPhase
from tests.agent_rig import MemoryHost, Rig, make_rig
from tests.agent_rig import events as _events
from tests.agent_rig import install as _install
from tests.agent_rig import rows as _rows
from tests.agent_rig import step_until as _step_until


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """An agent over two thread cores booted by a memory host, closed after the test."""
    with make_rig(tmp_path) as make:
        yield make


def _lose_link(agent: Agent, host: MemoryHost, core: str) -> None:
    host.cores[core].close()  # the core's process ended: EOF
    deadline = time.monotonic() + 10
    while agent.cores[core].phase is not HostPhase.DISCONNECTED:  # the pump sees the EOF
        assert time.monotonic() < deadline, "the client never saw the core go"
        time.sleep(0.01)


def test_a_core_that_exits_is_restarted_and_comes_back(rig: Rig) -> None:
    agent, host, clock = rig()
    _lose_link(agent, host, "m4-1")
    agent.step()
    assert host.restarts == []
    assert agent.logs[-1] == "m4-1: link lost; restarting it in 1 s"
    clock.now += 0.5
    agent.step()
    assert host.restarts == []
    clock.now += 0.5
    agent.step()
    assert host.restarts == ["m4-1"]
    assert agent.cores["m4-1"].phase is HostPhase.READY
    assert agent.logs[-1].startswith("m4-1: restarted after 1 s")
    events = _events(agent)
    assert [(e.kind, e.core, e.code) for e in events] == [("crash", "m4-1", EXIT_UNKNOWN)]
    heartbeats: list[Any] = []
    while not heartbeats:  # the restarted core heartbeats to the agent
        heartbeats = [e for e in agent.cores["m4-1"].poll(0.5) if hasattr(e, "uptime_ms")]
    assert agent.cores["m4-0"].phase is HostPhase.READY  # the other core was left alone


def test_restarts_back_off_doubling_up_to_the_cap_and_reset_after_a_stable_run(
    rig: Rig,
) -> None:
    agent, host, clock = rig()
    host.healthy = False  # every restarted core dies at once
    _lose_link(agent, host, "m4-0")
    start, times = clock.now, []
    while len(times) < 7:
        agent.step()
        if len(host.restarts) > len(times):
            times.append(clock.now - start)
        clock.now += 0.25
    # scheduled 1 s after the loss, then 2, 4, 8, 16 and 30 (capped) s after each failure
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps == [1.0, 2.25, 4.25, 8.25, 16.25, 30.25, 30.25]
    host.healthy = True
    while len(host.restarts) < 8:
        agent.step()
        clock.now += 0.25
    assert agent.cores["m4-0"].phase is HostPhase.READY
    clock.now += agent.config.core_restart_max_s
    agent.step()  # up for the cap: the back-off starts over
    _lose_link(agent, host, "m4-0")
    agent.step()
    assert agent.logs[-1] == "m4-0: link lost; restarting it in 1 s"


def test_the_anomaly_models_flag_reaches_the_telemetry_rows_and_a_classifier_sends_none(
    rig: Rig,
) -> None:
    agent, _, _ = rig()
    _install(agent.cores["m4-0"], "kws-v1.0.0")
    _install(agent.cores["m4-1"], "vibration-v2.0.0")
    models = lambda: {r.model_id for r in _rows(agent)}  # noqa: E731
    _step_until(agent, lambda: models() == {"kws", "vibration"}, "rows of both models")
    rows = _rows(agent)
    assert all(isinstance(r.anomaly, bool) for r in rows if r.model_id == "vibration")
    assert all(r.anomaly is None for r in rows if r.model_id == "kws")


def test_a_killed_core_is_one_crash_event_with_its_exit_status_and_model(rig: Rig) -> None:
    agent, host, clock = rig()
    _install(agent.cores["m4-1"], "vibration-v1.0.0")
    _step_until(agent, lambda: bool(_rows(agent)), "an inference row")
    host.exit_statuses["m4-1"] = -9
    _lose_link(agent, host, "m4-1")
    agent.step()  # seen at once, before the restart
    crashes = [e for e in _events(agent) if e.kind == "crash"]
    assert [(e.core, e.code) for e in crashes] == [("m4-1", -9)]
    assert crashes[0].reason == "killed by SIGKILL while running vibration 1.0.0 in slot 0"
    assert crashes[0].ts_ms == int(clock.now * 1000)
    clock.now += 1.0
    agent.step()
    assert host.restarts == ["m4-1"]
    _step_until(agent, lambda: agent.cores["m4-1"].phase is HostPhase.READY, "the restart")
    for _ in range(5):
        agent.step()
    assert [e.kind for e in _events(agent)] == ["crash"]  # the restart adds none


def test_a_core_lost_without_restarts_is_still_one_crash_event(rig: Rig) -> None:
    agent, host, clock = rig(restart_cores=False)
    host.exit_statuses["m4-0"] = 86
    _lose_link(agent, host, "m4-0")
    for _ in range(3):
        agent.step()
        clock.now += 5
    assert [(e.kind, e.core, e.code, e.reason) for e in _events(agent)] == [
        ("crash", "m4-0", 86, "exited with code 86 while running no model")
    ]
    assert host.restarts == []


def test_a_crash_during_a_trial_boots_the_old_model_and_is_also_a_revert_event(
    rig: Rig,
) -> None:
    agent, host, clock = rig()
    _install(agent.cores["m4-1"], "vibration-v1.0.0")
    _install(agent.cores["m4-1"], "vibration-v2.0.0", confirm=False)
    _step_until(agent, lambda: any(r.model_version == "2.0.0" for r in _rows(agent)), "a trial row")
    _lose_link(agent, host, "m4-1")
    agent.step()
    clock.now += 1.0
    agent.step()
    _step_until(agent, lambda: len(_events(agent)) >= 2, "the revert event")
    crash, revert = _events(agent)
    assert (crash.kind, crash.reason) == (
        "crash",
        "link lost while running vibration 2.0.0 in slot 1",
    )
    assert (revert.kind, revert.core) == ("revert", "m4-1")
    assert revert.reason == "REVERTED_ON_BOOT: booted vibration 1.0.0 after the crash"
