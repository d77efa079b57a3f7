"""Crash loop (issue 5): SIGKILL the engine process at random instants during a staged rollout.

The rollout engine and its outbox dispatcher run in a separate process
(`tests/system/_crashloop/engine_proc.py`) over a SQLite file or PostgreSQL, talking to the mock
IoT hub (`BackgroundHub`, in this process) through the `azure-iot-hub` SDK adapter. The devices
are simulated agents on MQTT/TLS connections to the same hub (`_crashloop/fleet.py`): the
engine sees them only through the hub's REST API. A 3-stage rollout of rel-1 to every device
and, at the same time, a rollout of rel-2 to a ring of 4% of them (so both want those devices)
run while the test kills the engine with SIGKILL after a random (seeded) lifetime and starts a
new one, until both complete; the invariants (`_crashloop/invariants.py`) are checked all along
and after every kill, and at the end: every device that reported a release active is confirmed
in that release's rollout, the refusing ones are rejected, every outbox message is dispatched,
no offer was written twice, and each rollout's `completed` notice was delivered.

Sizes by environment: TINYFLEET_CRASHLOOP_DEVICES (500), TINYFLEET_CRASHLOOP_KILLS (most
kills, 12), TINYFLEET_CRASHLOOP_SEED (1), TINYFLEET_CRASHLOOP_SOAK_S (stage soak, 1.5).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.hub import BackgroundHub, HubConfig
from infra.hub._store import DeviceRecord, HubStore
from infra.hub._twin import Twin
from service.domain.rollout_events import Start
from service.domain.spec import (
    FailureAction,
    FailurePolicy,
    RatePolicy,
    RolloutSpec,
    Stage,
    SuccessPolicy,
)
from service.engine import Engine
from service.hubgateway import MemoryHubGateway
from service.storage import Device, DeviceGroup, GroupKind, Release, SqlStorage, upgrade
from tests.contract.storage.pg import postgres_server, scratch_database
from tests.system._crashloop.engine_proc import ProcConfig, engine_config
from tests.system._crashloop.fleet import DirectorLog, Fleet, device_ids
from tests.system._crashloop.invariants import FINAL_ROLLOUT, TERMINAL, Invariants, all_jobs

DEVICES = int(os.environ.get("TINYFLEET_CRASHLOOP_DEVICES", "500"))
MAX_KILLS = int(os.environ.get("TINYFLEET_CRASHLOOP_KILLS", "12"))
SEED = int(os.environ.get("TINYFLEET_CRASHLOOP_SEED", "1"))
SOAK = timedelta(seconds=float(os.environ.get("TINYFLEET_CRASHLOOP_SOAK_S", "1.5")))
LIFETIME_S = (0.3, 3.0)  # how long an engine process runs (after `ready`) before its SIGKILL
ROLLOUT_TIMEOUT_S = 150 + DEVICES * 0.1
HOSTNAME = "crashloop-hub.local"
KEY = "Y3Jhc2hsb29wLWRldmljZS1rZXktZm9yLXRlc3RzLW9ubHk="  # every simulated device's SAS key
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 25, tzinfo=UTC)
RELEASES = {"ro-1": "rel-1", "ro-2": "rel-2"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tinyfleet.db'}"
        return
    with postgres_server() as admin:
        if admin is None:
            pytest.skip("no PostgreSQL server reachable and no initdb to start one")
        with scratch_database(admin) as url:
            yield url


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[BackgroundHub]:
    config = HubConfig(data_dir=tmp_path / "hub", hostname=HOSTNAME, mqtt_port=0, https_port=0)
    config.data_dir.mkdir(parents=True)
    store = HubStore(config.db_path)
    try:
        for device_id in device_ids(DEVICES):
            store.put_device(DeviceRecord(device_id, "1", primary_key=KEY), Twin.new(device_id))
    finally:
        store.close()
    with BackgroundHub(config) as background:
        yield background


def rollout_specs(devices: int) -> tuple[RolloutSpec, RolloutSpec]:
    """`ro-1`: rel-1 to everyone in 3 stages; `ro-2`: rel-2 to the canary ring (every 25th
    device) at the same time, so that both rollouts want some devices."""
    ro1 = RolloutSpec(
        rollout_id="ro-1",
        release_id="rel-1",
        group_id="grp-all",
        previous_release_id="rel-0",
        stages=(
            Stage("canary", SOAK, count=max(2, devices // 50)),
            Stage("early", SOAK, percent=30),
            Stage("rest", SOAK, percent=100),
        ),
        success=SuccessPolicy(threshold_percent=95),
        failure=FailurePolicy(threshold_percent=20, min_devices=50, action=FailureAction.ABORT),
        rate=RatePolicy(base_per_minute=100_000, max_per_minute=100_000),
    )
    ro2 = RolloutSpec(
        rollout_id="ro-2",
        release_id="rel-2",
        group_id="grp-ring",
        previous_release_id="rel-0",
        stages=(Stage("ring", SOAK, percent=100),),
        success=SuccessPolicy(threshold_percent=100),
        rate=RatePolicy(base_per_minute=100_000, max_per_minute=100_000),
    )
    return ro1, ro2


def in_ring(n: int) -> bool:
    return n % 25 == 0


def set_up_rollouts(db_url: str) -> tuple[dict[str, int], set[str]]:
    """Devices, groups, releases and two started rollouts; returns each rollout's job count
    and the devices that refuse every release (1% of ro-1's last stage, none in the ring)."""
    upgrade(db_url)
    storage = SqlStorage(db_url)
    try:
        ids = device_ids(DEVICES)
        with storage.begin() as uow:
            uow.devices.upsert(
                Device(d, "mt3620", T0, tags={"fleet": "crash", "ring": str(in_ring(n))})
                for n, d in enumerate(ids)
            )
            uow.groups.put(DeviceGroup("grp-all", "everyone", GroupKind.TAG, "fleet=crash"))
            uow.groups.put(DeviceGroup("grp-ring", "canary ring", GroupKind.TAG, "ring=True"))
            for n, rid in enumerate(("rel-0", "rel-1", "rel-2")):
                uow.releases.create(Release(rid, n, ("mt3620",), {}, T0, "alice"))
        config = engine_config("setup", 1.0)
        setup = Engine(storage, MemoryHubGateway(), config)
        now = datetime.now(UTC)
        counts = {}
        for spec in rollout_specs(DEVICES):
            counts[spec.rollout_id] = setup.create_rollout(spec, now)
            setup.command(spec.rollout_id, Start("alice"), now)
        with storage.begin() as uow:
            uow.leases.release(config.lease_name, config.holder)
        ring = {d for n, d in enumerate(ids) if in_ring(n)}
        last = sorted(
            j.device_id
            for j in all_jobs(storage, "ro-1")
            if j.stage == 2 and j.device_id not in ring
        )
        return counts, set(last[: max(1, len(last) // 100)])
    finally:
        storage.close()


@dataclass
class EngineProcess:
    """One engine process; `ready` once it has built its engine and is about to tick."""

    proc: subprocess.Popen[bytes]
    stderr: Path

    @classmethod
    def spawn(cls, config_path: Path, n: int, ca_cert: str) -> EngineProcess:
        stderr = config_path.parent / f"engine-{n}.err"
        env = {**os.environ, "REQUESTS_CA_BUNDLE": ca_cert, "PYTHONPATH": str(ROOT)}
        with stderr.open("wb") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.system._crashloop.engine_proc", str(config_path)],
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=ROOT,
                env=env,
            )
        return cls(proc, stderr)

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        # epoll, not select(): the fleet's sockets take file descriptors past select's 1024
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout)
        line = self.proc.stdout.readline() if ready else b""
        self.check_alive()
        assert line.strip() == b"ready", f"the engine process did not start: {line!r}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.stderr.read_text()[-3000:]
            pytest.fail(f"the engine process died by itself ({self.proc.returncode}):\n{tail}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_rollout_completes_through_sigkills(
    db_url: str, hub: BackgroundHub, tmp_path: Path
) -> None:
    counts, bad = set_up_rollouts(db_url)
    info = json.loads((hub.server.config.data_dir / "hub.json").read_text())
    config_path = tmp_path / "engine.json"
    proc_config = ProcConfig(
        db_url=db_url,
        hub_connection_string=info["service_connection_string"],
        director_log=str(tmp_path / "director.log"),
        notice_log=str(tmp_path / "notices.log"),
    )
    proc_config.save(config_path)
    ca_cert = str(hub.server.ca_cert)
    ids = device_ids(DEVICES)
    fleet = Fleet(
        "127.0.0.1",
        hub.server.mqtt_port,
        HOSTNAME,
        ca_cert,
        KEY,
        ids,
        bad,
        DirectorLog(proc_config.director_log),
    )
    storage = SqlStorage(db_url)
    invariants = Invariants(RELEASES, counts)
    rng = random.Random(SEED)
    kills = 0
    engine: EngineProcess | None = None
    began = time.monotonic()
    timeline: list[str] = []
    try:
        fleet.start()
        timeline.append(f"{time.monotonic() - began:6.1f} s  {DEVICES} devices connected")
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        states = invariants.check(storage, fleet)
        while not finished(states):
            assert time.monotonic() < deadline, f"no completion in time: {invariants.progress}"
            engine = EngineProcess.spawn(config_path, kills, ca_cert)
            engine.wait_ready()
            timeline.append(f"{time.monotonic() - began:6.1f} s  engine {kills} ready")
            killing = kills < MAX_KILLS
            end = time.monotonic() + (rng.uniform(*LIFETIME_S) if killing else ROLLOUT_TIMEOUT_S)
            while time.monotonic() < min(end, deadline) and not finished(states):
                time.sleep(0.1)
                engine.check_alive()
                states = invariants.check(storage, fleet)
            if not killing:
                break
            engine.kill()
            engine = None
            kills += 1
            states = invariants.check(storage, fleet)
            timeline.append(
                f"{time.monotonic() - began:6.1f} s  kill {kills}: {invariants.progress}"
            )
        timeline.append(f"{time.monotonic() - began:6.1f} s  finished: {invariants.progress}")
        assert set(states.values()) == {"completed"}, f"rollouts ended {invariants.progress}"

        # A running engine drains the outbox (the final notices) and confirms nothing more.
        if engine is None:
            engine = EngineProcess.spawn(config_path, kills, ca_cert)
            engine.wait_ready()
        # A completed rollout still watches its soaking jobs: wait for the last confirmations.
        drain_deadline = time.monotonic() + 30
        while time.monotonic() < drain_deadline:
            with storage.begin(readonly=True) as uow:
                pending = uow.outbox.pending()
                settled = all(
                    sum(n for s, n in uow.jobs.count_by_state(r).items() if s in TERMINAL) == total
                    for r, total in counts.items()
                )
            if pending == 0 and settled:
                break
            engine.check_alive()
            time.sleep(0.1)
        invariants.check(storage, fleet)
        engine.kill()
        engine = None
        timeline.append(f"{time.monotonic() - began:6.1f} s  drained: {invariants.progress}")

        assert pending == 0, f"{pending} outbox messages never dispatched"
        check_outcome(storage, fleet, hub, bad, Path(proc_config.notice_log))
        assert kills >= min(MAX_KILLS, 3), f"only {kills} kills: the loop tested little"
    finally:
        failed_rounds = sum(
            err.read_text().count("retrying next round") for err in tmp_path.glob("engine-*.err")
        )
        print(f"\n[crash loop] {db_url.split(':')[0]}: {DEVICES} devices, {kills} SIGKILLs, "
              f"{invariants.checks} invariant checks, {failed_rounds} failed engine rounds "
              f"(logged in engine-*.err, retried)\n" + "\n".join(timeline))  # fmt: skip
        if engine is not None:
            engine.kill()
        fleet.stop()
        storage.close()


def finished(states: dict[str, str]) -> bool:
    return all(state in FINAL_ROLLOUT for state in states.values())


def check_outcome(
    storage: SqlStorage, fleet: Fleet, hub: BackgroundHub, bad: set[str], notice_log: Path
) -> None:
    history, acked, _ = fleet.snapshot()
    for rollout_id, release_id in RELEASES.items():
        jobs = {j.device_id: j.state for j in all_jobs(storage, rollout_id)}
        assert {d for d, s in jobs.items() if s == "rejected"} == bad & set(jobs)
        confirmed = {d for d, s in jobs.items() if s == "confirmed"}
        # every acknowledged "release active" report is counted, once, as confirmed
        assert confirmed == {d for d, r in acked if r == release_id} == set(jobs) - bad
    versions = hub.call(lambda: {d: hub.core.store.twins[d].desired_version for d in fleet.ids})
    for device in fleet.ids:
        # one desired write per workflow: no repeated dispatch rewrote an offer
        assert versions[device] - 1 == len(history.get(device, ())), (device, history.get(device))
    notices = [json.loads(line) for line in notice_log.read_text().splitlines()]
    completed = Counter(n["rollout"] for n in {n["key"]: n for n in notices}.values()
                        if n["kind"] == "completed")  # fmt: skip
    assert completed == Counter(list(RELEASES)), f"completed notices: {completed}"
