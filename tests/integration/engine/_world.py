"""A small world for the engine tests: storage, the in-memory hub, simulated devices, and a
driver that restarts the engine and dispatcher from storage after every injected crash."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from device_agent.protocol import COMPONENT
from service.domain.gates import GatePolicy
from service.domain.jobs import JobState
from service.domain.planner import StagePlan
from service.domain.rollout_events import RolloutEvent, Start
from service.domain.spec import (
    FailureAction,
    FailurePolicy,
    RolloutSpec,
    Stage,
    SuccessPolicy,
)
from service.engine import (
    Dispatcher,
    Engine,
    EngineConfig,
    HealthGate,
    MemoryDirector,
    MemoryNotifier,
)
from service.hubgateway import MemoryHubGateway
from service.storage import Device, DeviceGroup, GroupKind, Release, Storage

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CONFIG = EngineConfig(
    image_url="https://repo.test/image/metadata/",
    director_url="https://repo.test/director/devices/{device_id}/metadata/",
    targets_url="https://repo.test/image/targets/",
)
_STEPS = ("check", "verify", "stage", "activate")
_RANK = {s: i for i, s in enumerate(JobState)}
FINAL = {"completed", "aborted", "rolled_back"}


class Crash(Exception):
    """Stands for the process dying at a step boundary."""


@dataclass
class Fleet:
    """Devices that install what they are offered, one step per minute; `bad` ones refuse it;
    `offline` ones neither act nor report until they are taken out of the set."""

    hub: MemoryHubGateway
    ids: list[str]
    bad: set[str]
    offline: set[str] = field(default_factory=set)
    progress: dict[str, tuple[str, int]] = field(default_factory=dict)
    seen: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)  # devices that reported the release active
    installed: dict[str, str] = field(default_factory=dict)  # release each device runs
    clock: Callable[[], datetime] = field(kw_only=True)  # the world's: the cores' heartbeats

    def step(self) -> None:
        for device in self.ids:
            if device in self.offline:
                continue
            running = self.installed.get(device, "rel-0")
            workflow = self.hub.desired(device).get(COMPONENT, {}).get("service", {})
            workflow = workflow.get("workflow") or {}
            wid, action = workflow.get("id"), workflow.get("action")
            if not wid:
                self._report(device, {"state": "idle", "installedReleaseId": running})
                continue
            self.seen.setdefault(device, set()).add((wid, action))
            if action != 3:  # cancelled: the run is undone, as the agent reports it
                undone = {"name": "reverted", "workflowId": wid, "reason": "cancelled"}
                self._report(
                    device, {"state": "idle", "installedReleaseId": running, "phase": undone}
                )
                self.progress.pop(device, None)
                continue
            if self.progress.get(device, ("", 0))[0] != wid:
                self.progress[device] = (wid, 0)
            index = self.progress[device][1]
            release = wid.split(".")[1]
            if device in self.bad and release == "rel-1":
                self._report(device, self._agent("failed", wid, running, "check", "signature"))
            elif index < len(_STEPS):
                self._report(device, self._agent("deploying", wid, running, _STEPS[index], ""))
                self.progress[device] = (wid, index + 1)
            else:
                self.installed[device] = release
                self._report(device, self._agent("idle", wid, release, "confirm", ""))
                if release == "rel-1":
                    self.acked.add(device)

    def _report(self, device: str, agent: dict[str, Any]) -> None:
        self.hub.report(device, {COMPONENT: {"__t": "c", "agent": agent}})

    def _agent(
        self, state: str, wid: str, installed: str, step: str, reason: str
    ) -> dict[str, Any]:
        beat = int(self.clock().timestamp() * 1000)  # the core is alive: a heartbeat just now
        return {
            "state": state,
            "workflow": {"id": wid},
            "installedReleaseId": installed,
            "lastResult": {"step": step, "reason": reason},
            "cores": {"m4-0": {"state": "running", "heartbeatAtMs": beat, "inferences": 1}},
            # Reported patches merge: a phase left from a cancelled run would still describe
            # that run. This device reports by state and step (as agents before phases did).
            "phase": None,
        }


def spec(
    action: FailureAction = FailureAction.ABORT,
    *,
    gate: GatePolicy | None = None,
    require_gate: bool = False,
) -> RolloutSpec:
    return RolloutSpec(
        rollout_id="ro-1",
        release_id="rel-1",
        group_id="grp-1",
        previous_release_id="rel-0",
        stages=(
            Stage("canary", timedelta(minutes=5), count=4),
            Stage("rest", timedelta(minutes=5), percent=100),
        ),
        success=SuccessPolicy(threshold_percent=80, require_gate=require_gate),
        failure=FailurePolicy(threshold_percent=20, min_devices=10, action=action),
        gate=gate,
    )


@dataclass
class World:
    storage: Storage
    devices: int = 20
    bad_in_rest: int = 2
    crash_rate: float = 0.0  # chance of a crash at each step boundary (seeded)
    seed: int = 0
    crash_at: set[str] = field(default_factory=set)  # or at the first time each named step runs
    now: datetime = T0
    crashes: Counter[str] = field(default_factory=Counter)
    spec: RolloutSpec = field(default_factory=spec)
    gates: HealthGate | None = None
    start: bool = True

    def __post_init__(self) -> None:
        start = self.now  # the world's one clock: T0, or the wall clock's now for a real stack
        self.hub = MemoryHubGateway(clock=lambda: self.now)
        self.director = MemoryDirector()
        self.notifier = MemoryNotifier()
        ids = [f"dev-{n:03d}" for n in range(self.devices)]
        with self.storage.begin() as uow:
            uow.devices.upsert(Device(d, "mt3620", start, tags={"fleet": "demo"}) for d in ids)
            uow.groups.put(DeviceGroup("grp-1", "demo", GroupKind.TAG, "fleet=demo"))
            for n, rid in enumerate(("rel-0", "rel-1")):
                uow.releases.create(Release(rid, n, ("mt3620",), {}, start, "alice"))
        for d in ids:
            self.hub.register_device(d)
        setup = Engine(self.storage, self.hub, CONFIG)
        setup.create_rollout(self.spec, start)
        with self.storage.begin(readonly=True) as uow:
            plan_data = uow.rollouts.get("ro-1").state_data
        plan = StagePlan("ro-1", tuple(int(b) for b in plan_data["plan_bounds"]), self.devices)
        rest = [d for d in ids if plan.stage_of(d) == 1]
        self.fleet = Fleet(self.hub, ids, set(rest[: self.bad_in_rest]), clock=lambda: self.now)
        if self.start:
            setup.command("ro-1", Start("alice"), start)
        self._rng = random.Random(self.seed)
        self._restart()

    def _hook(self, step: str) -> None:
        due_random = self._rng.random() < self.crash_rate
        due_named = step in self.crash_at and step not in self.crashes
        if due_random or due_named:
            self.crashes[step] += 1
            raise Crash(step)

    def _restart(self) -> None:
        """A new process: engine and dispatcher rebuilt, nothing kept but storage and the hub."""
        self.engine = Engine(self.storage, self.hub, CONFIG, gates=self.gates, hook=self._hook)
        self.dispatcher = Dispatcher(
            self.storage, self.hub, self.director, self.notifier, CONFIG, hook=self._hook
        )

    def step(self) -> None:
        self.now += timedelta(minutes=1)
        self.fleet.step()
        try:
            self.engine.tick(self.now)
            self.dispatcher.run_once(self.now)
        except Crash:
            self._restart()

    def rollout_state(self) -> tuple[str, int, int]:
        with self.storage.begin(readonly=True) as uow:
            r = uow.rollouts.get("ro-1")
        return r.state, int(r.state_data["stage"]), int(r.state_data["version"])

    def jobs(self, release_id: str = "rel-1") -> dict[str, str]:
        """Device -> job state, for the jobs of one release (the forward one by default)."""
        with self.storage.begin(readonly=True) as uow:
            page = uow.jobs.list("ro-1", limit=1000, release_id=release_id)
        return {j.device_id: j.state for j in page.items}

    def join(self, device_id: str) -> None:
        """A device registers and joins the group (membership is dynamic)."""
        with self.storage.begin() as uow:
            uow.devices.upsert([Device(device_id, "mt3620", self.now, tags={"fleet": "demo"})])
        self.hub.register_device(device_id)
        self.fleet.ids.append(device_id)
        self.devices += 1

    def command(self, event: RolloutEvent) -> None:
        self.engine.command("ro-1", event, self.now)

    def run_until(self, states: set[str], max_steps: int = 200) -> str:
        """Step until the rollout is in one of `states` (or fail); returns the state."""
        for _ in range(max_steps):
            state = self.rollout_state()[0]
            if state in states:
                return state
            self.step()
        raise AssertionError(f"still {self.rollout_state()} after {max_steps} steps")
