"""The agent's telemetry flush interval: with `telemetry_flush_s` > 0 the agent sends at most one
round of batches per interval of its own clock (records gather into fuller batches), and keeps
sending on the next turns while a backlog is left."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_rig import Rig, hub_of, install, make_rig, rows, step_until


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path) as make:
        yield make


def test_rows_wait_for_the_next_flush_of_the_agents_clock(rig: Rig) -> None:
    agent, _, clock = rig(telemetry_flush_s=5.0)
    agent.step()  # the first turn flushes (the health row)
    sent = len(hub_of(agent).batches)
    assert sent == 1
    install(agent.cores["m4-0"], "kws-v1.0.0")
    step_until(agent, lambda: len(agent.telemetry) >= 10, "rows waiting in the buffer")
    assert len(hub_of(agent).batches) == sent  # the clock stood still: nothing sent
    clock.now += 5.0
    agent.step()
    assert len(hub_of(agent).batches) == sent + 1 and len(rows(agent)) >= 10


def test_a_backlog_keeps_flushing_on_the_next_turns(rig: Rig) -> None:
    agent, _, clock = rig(telemetry_flush_s=60.0, telemetry_capacity=5000)
    agent.telemetry._batch_limit = 2_000
    install(agent.cores["m4-0"], "kws-v1.0.0")
    step_until(agent, lambda: len(agent.telemetry) >= 500, "a backlog of rows")
    clock.now += 60.0
    before = len(hub_of(agent).batches)
    agent.step()
    assert len(hub_of(agent).batches) == before + 4  # one round: four batches
    agent.step()  # the same clock: the backlog goes on anyway
    assert len(hub_of(agent).batches) == before + 8
