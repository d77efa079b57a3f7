"""A two-core release is atomic whatever step fails on whichever core: a failure (or a core that
dies) at stage, activate, self-test or confirm of m4-0 or m4-1 leaves both cores on the old
release, the report says every core reverted, and the agent thread lives on to install the next
release. The cores are real processes; failures are injected before the agent's step (the
agent's `before_command` seam), by a core process killed before its step, or by a model whose
self-test fails on the core."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device_agent.agent import Agent
from device_agent.workflow import Command
from infra.simdevice import SimulatedDevice
from service.trust import ArtifactSpec
from tests.agent_world import (
    PREBUILT,
    MemoryHub,
    deploy,
    sign_prebuilt,
    simulated_device,
    wait_for,
)
from tests.signing_world import World

MODELS = {"m4-0": "kws", "m4-1": "vibration"}


class Injector:
    """Fails the agent's `kind` step on `core`, once: raises, or kills the core first."""

    def __init__(self) -> None:
        self.target: tuple[str, str, str] | None = None  # (kind, core, how)
        self.fired = False
        self.device: SimulatedDevice | None = None

    def __call__(self, command: Command) -> None:
        if self.target is None or self.fired:
            return
        kind, core, how = self.target
        if (command.kind, command.core) != (kind, core):
            return
        self.fired = True
        if how == "crash":
            assert self.device is not None
            self.device.kill_core(core)  # a power cut of the core just before its step
        else:
            raise RuntimeError(f"injected failure before {kind} on {core}")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[World, MemoryHub, SimulatedDevice, Injector]]:
    world = World(tmp_path / "world")
    hub = MemoryHub("dev-1")
    device = simulated_device(tmp_path, world, hub, period_s=0.1)
    injector = Injector()
    injector.device = device
    old = device.agent
    device.agent = Agent(
        old.config, old.hub, old.cores, fetcher_for=old._fetcher_for,
        source_for=old._source_for, host=device, before_command=injector,
    )  # fmt: skip
    device.start()
    try:
        sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"})
        world.director.assign("dev-1", "mt3620", "r1", world.now)
        device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
        wait_for(lambda: _settled(hub, "r1"), what="r1 installed")
        yield world, hub, device, injector
    finally:
        device.stop()


def _settled(hub: MemoryHub, release: str) -> bool:
    agent = hub.agent()
    return agent.get("installedReleaseId") == release and agent.get("state") == "idle"


def _versions(hub: MemoryHub) -> dict[str, str | None]:
    cores = hub.agent().get("cores", {})
    return {
        core: (c.get("activeModel") or {}).get("version") if c.get("state") == "running" else None
        for core, c in cores.items()
    }


def _sign_r2_with_failing_selftest(world: World, tmp: Path, core: str) -> None:
    """r2, with `core`'s model signed correctly but carrying self-test vectors it fails."""
    stem = f"{MODELS[core]}-v2.0.0"
    bad = tmp / f"{stem}.tflite"
    shutil.copy(PREBUILT / f"{stem}.tflite", bad)
    sidecar = json.loads((PREBUILT / f"{stem}.json").read_text())
    for vector in sidecar["selfTest"]:  # every expected byte flipped: far beyond tolerance
        expected = base64.b64decode(vector["expected"])
        vector["expected"] = base64.b64encode(bytes(b ^ 0x80 for b in expected)).decode()
        vector["tolerance"] = 0
    bad.with_suffix(".json").write_text(json.dumps(sidecar))
    spec = ArtifactSpec.from_file(bad, core, ["mt3620"], 1)
    world.image.add_artifact(spec.target_path, bad, spec.custom, world.now)
    other = "m4-1" if core == "m4-0" else "m4-0"
    good = ArtifactSpec.from_file(PREBUILT / f"{MODELS[other]}-v2.0.0.tflite", other, ["mt3620"], 1)
    world.image.add_artifact(good.target_path, good.source, good.custom, world.now)
    members = sorted([(core, spec.target_path), (other, good.target_path)])
    world.image.add_release("r2", 1, ["mt3620"], members, world.now)
    world.image.commit(world.now)


CASES = [
    (core, step, how)
    for core in ("m4-0", "m4-1")
    for step, how in (
        ("stage", "raise"),
        ("activate", "raise"),
        ("activate", "crash"),
        ("selftest", "model"),
        ("confirm", "raise"),
        ("confirm", "crash"),
    )
]


@pytest.mark.parametrize(
    ("core", "step", "how"),
    CASES,
    ids=[f"{c}-{s}" + ("-crash" if h == "crash" else "") for c, s, h in CASES],
)
def test_a_failure_at_any_step_of_either_core_reverts_the_whole_release(
    rig: tuple[World, MemoryHub, SimulatedDevice, Injector],
    tmp_path: Path,
    core: str,
    step: str,
    how: str,
) -> None:
    world, hub, device, injector = rig
    if how == "model":
        _sign_r2_with_failing_selftest(world, tmp_path, core)
    else:
        sign_prebuilt(world, "r2", {"m4-0": "kws-v2.0.0", "m4-1": "vibration-v2.0.0"})
        injector.target = (step, core, how)
    world.director.assign("dev-1", "mt3620", "r2", world.now)
    device.agent.on_desired(hub.set_desired(deploy("wf-2", "dev-1")))

    wait_for(lambda: hub.agent().get("state") == "failed", what="r2 failed")
    result = hub.agent()["lastResult"]
    assert result["step"] == {"selftest": "activate"}.get(step, step)
    if step != "stage":  # nothing ran the new release after a failed stage: nothing to revert
        assert result["detail"].startswith("every core reverted"), result
    assert injector.fired or how == "model"
    both_v1: Callable[[], bool] = lambda: _versions(hub) == {"m4-0": "1.0.0", "m4-1": "1.0.0"}  # noqa: E731
    wait_for(both_v1, what=f"both cores back on r1 (now {_versions(hub)})")
    assert hub.agent()["installedReleaseId"] == "r1"
    assert device._thread is not None and device._thread.is_alive()

    # The agent lives on: the next deployment of r2 installs on both cores.
    if how == "model":
        return
    device.agent.on_desired(hub.set_desired(deploy("wf-3", "dev-1")))
    wait_for(lambda: _settled(hub, "r2"), what="r2 installed on the next try")
    wait_for(lambda: _versions(hub) == {"m4-0": "2.0.0", "m4-1": "2.0.0"}, what="both on r2")
