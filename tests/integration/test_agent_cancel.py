"""A cancel that arrives while the agent installs is honoured at every phase, on real cores.

Before, the agent ran a whole install inside one turn of its loop and read the cancel only
afterwards: the install completed and the device stayed on the cancelled release. The cancel
is injected here just before a chosen command of the run (the agent's fault-injection hook),
which is exactly "while the agent is in that phase".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.protocol import parse_reported
from device_agent.workflow import Command
from infra.simdevice import SimulatedDevice
from tests.agent_world import (
    MemoryHub,
    deploy,
    offer_v1,
    running_device,
    sign_prebuilt,
    wait_for,
)
from tests.signing_world import World

V2 = {"m4-0": "kws-v2.0.0", "m4-1": "vibration-v2.0.0"}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    with running_device(tmp_path, period_s=0.05, health_interval_s=1.0) as (world, hub, device):
        offer_v1(world, hub, device, "wf-1")
        wait_for(lambda: _phase(hub, "wf-1") == "confirmed", what="r1 installed")
        yield world, hub, device


def _phase(hub: MemoryHub, workflow: str) -> str | None:
    phase = hub.agent().get("phase") or {}
    return phase.get("name") if phase.get("workflowId") == workflow else None


def _cancel(workflow: str, device_id: str) -> dict[str, Any]:
    document = deploy(workflow, device_id)
    document["workflow"]["action"] = 255
    return document


# (phase, the command the cancel arrives just before: kind, core, or a report's phase)
_AT = [
    ("downloading-first-core", ("stage", "m4-0")),
    ("downloading-second-core", ("stage", "m4-1")),
    ("staged", ("report", "staged")),
    ("activating", ("activate", "m4-1")),
    ("trial", ("confirm", "m4-0")),
]


@pytest.mark.parametrize("at", [row[1] for row in _AT], ids=[row[0] for row in _AT])
def test_a_cancel_at_each_phase_reverts_every_core_and_reports_reverted(
    rig: tuple[World, MemoryHub, SimulatedDevice], at: tuple[str, str]
) -> None:
    world, hub, device = rig
    sign_prebuilt(world, "r2", V2, counter=2)
    world.director.assign("dev-1", "mt3620", "r2", world.now)
    seen: list[str] = []

    def cancel_here(command: Command) -> None:
        which = command.phase.value if command.phase else command.core
        seen.append(f"{command.kind}:{which}")
        if (command.kind, which) == at and not any(s.startswith("cancel") for s in seen):
            seen.append("cancel")
            device.agent.on_desired(hub.set_desired(_cancel("wf-2", "dev-1")))

    device.agent._before_command = cancel_here
    device.agent.on_desired(hub.set_desired(deploy("wf-2", "dev-1")))

    wait_for(lambda: _phase(hub, "wf-2") == "reverted", what=f"wf-2 reverted ({seen})")
    reported = parse_reported(hub.agent())
    assert "cancel" in seen
    assert reported.phase_reason == "cancelled"
    assert reported.installed_release == "r1"
    for core in ("m4-0", "m4-1"):  # every core back on (or never left) its v1 model
        assert reported.cores[core].model_version == "1.0.0", (core, seen)
    assert "record:None" not in seen  # the cancelled release was never recorded


def test_a_new_offer_while_installing_undoes_the_run_then_runs_the_offer(
    rig: tuple[World, MemoryHub, SimulatedDevice],
) -> None:
    # A rollback's offer rewrites the desired twin with another workflow: the run under way is
    # undone first, then the new workflow runs (before, the agent raised on the unexpected
    # deploy and dropped it).
    world, hub, device = rig
    sign_prebuilt(world, "r2", V2, counter=2)
    world.director.assign("dev-1", "mt3620", "r2", world.now)

    def offer_back(command: Command) -> None:
        if (command.kind, command.core) == ("activate", "m4-1"):
            device.agent._before_command = lambda command: None
            world.director.assign("dev-1", "mt3620", "r1", world.now)
            device.agent.on_desired(hub.set_desired(deploy("wf-3", "dev-1")))

    device.agent._before_command = offer_back
    device.agent.on_desired(hub.set_desired(deploy("wf-2", "dev-1")))

    wait_for(lambda: _phase(hub, "wf-3") == "confirmed", what="wf-3 run after wf-2 undone")
    reported = parse_reported(hub.agent())
    assert reported.installed_release == "r1"
    assert {c.model_version for c in reported.cores.values()} == {"1.0.0"}
