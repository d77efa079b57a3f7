"""The gate judges a stage's own devices, once they soaked, from the stage's start exactly
(issue 12: "a stage's gate is not tied to its devices"), and membership counts from a device's
first batch. Each test failed on the gate that read every device of the group on the new
release from the minute bucket before the stage."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from service.domain.rollout_events import Verdict
from service.storage import Device, DeviceGroup, GroupKind, RolloutStage
from service.telemetry import IngestWorker, StorageGroups, TelemetryGate
from tests.contract.storage.factories import release, rollout
from tests.integration.telemetry._world import T0_MS, Fleet, plan_jobs
from tests.integration.telemetry.conftest import Db

T0 = datetime.fromtimestamp(T0_MS / 1000, tz=UTC)
GATE = {"min_inferences": 300, "min_devices": 5}


def two_stages(db: Db, jobs: dict[str, tuple[int, str]], *, stage_1_at: datetime) -> object:
    """ro-1: rel-2 over rel-1 on grp-berlin in stages "canary" and "half"; stage 0 started an
    hour before T0, stage 1 at `stage_1_at`."""
    spec = {
        "stages": [{"name": "canary", "percent": 25}, {"name": "half", "percent": 50}],
        "gate": GATE,
    }
    ro = rollout(
        "ro-1",
        group_id="grp-berlin",
        release_id="rel-2",
        previous_release_id="rel-1",
        state="soaking",
        spec=spec,
        state_data={"stage": 1, "started_at": (T0 - timedelta(hours=1)).isoformat()},
    )
    with db.storage.begin() as uow:
        uow.groups.put(DeviceGroup("grp-berlin", "berlin", GroupKind.TAG, "site=berlin"))
        uow.releases.create(release("rel-1", 1))
        uow.releases.create(release("rel-2", 2))
        ro = uow.rollouts.create(ro)
        uow.rollouts.put_stage(
            RolloutStage("ro-1", 0, "done", 5, started_at=T0 - timedelta(hours=1))
        )
        uow.rollouts.put_stage(RolloutStage("ro-1", 1, "running", 10, started_at=stage_1_at))
    plan_jobs(db.storage, jobs)
    return ro


def send(fleet: Fleet, minutes: range, releases: dict[str, str], **batch: float) -> None:
    """Each device sends one batch of 40 rows a minute, from `releases[device]`."""
    rng = random.Random(3)
    for minute in minutes:
        fleet.clock_ms = T0_MS + minute * 60_000
        for device, release_id in releases.items():
            fleet.send(fleet.batch(device, release_id, n=40, rng=rng, **batch))  # type: ignore[arg-type]


def ingest(db: Db, fleet: Fleet) -> None:
    IngestWorker(fleet.source, db.store, groups_of=lambda _d: ("grp-berlin",)).drain()


STAGE_0 = [f"dev-{d}" for d in range(5)]
STAGE_1 = [f"dev-{d}" for d in range(5, 15)]
REST = [f"dev-{d}" for d in range(15, 25)]


def test_a_stage_whose_own_devices_have_not_soaked_waits_saying_how_many_have(db: Db) -> None:
    # "half" has just started: none of its 10 devices is confirmed, and none reports yet. The
    # canary stage's 5 devices and the still-old rest report plenty, and they look equal.
    jobs = {d: (0, "confirmed") for d in STAGE_0}
    jobs |= {d: (1, "offered") for d in STAGE_1} | {d: (1, "pending") for d in REST}
    ro = two_stages(db, jobs, stage_1_at=T0)
    fleet = Fleet()
    send(fleet, range(1, 10), {**dict.fromkeys(STAGE_0, "rel-2"), **dict.fromkeys(REST, "rel-1")})
    ingest(db, fleet)
    gate = TelemetryGate(db.store, db.storage)
    result = gate.evaluate(ro, 1, T0 + timedelta(minutes=10))  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.WAIT, result
    assert result.reason.startswith("0 of 20 stage devices soaked (the gate needs 5)")
    assert result.numbers == {"stage_soaked": 0, "stage_devices": 20, "stage_needed": 5}
    assert result.cohorts["stage_devices"] == 20 and result.cohorts["stage_soaked"] == 0
    assert result.cohorts["canary_devices"] == 5 and result.cohorts["control_devices"] == 10


def test_the_stage_passes_once_its_own_devices_soaked(db: Db) -> None:
    jobs = {d: (0, "confirmed") for d in STAGE_0} | {d: (1, "confirmed") for d in STAGE_1}
    jobs |= {d: (1, "pending") for d in REST}
    ro = two_stages(db, jobs, stage_1_at=T0)
    fleet = Fleet()
    releases = {**dict.fromkeys([*STAGE_0, *STAGE_1], "rel-2"), **dict.fromkeys(REST, "rel-1")}
    send(fleet, range(1, 10), releases)
    ingest(db, fleet)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 1, T0 + timedelta(minutes=10))  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.PASS, result.reason
    assert result.cohorts["canary_devices"] == 15 and result.cohorts["stage_soaked"] == 10


def test_devices_outside_the_stages_so_far_are_not_in_the_canary(db: Db) -> None:
    # Devices on rel-2 that are not confirmed devices of this rollout's stages so far (another
    # rollout's, or installing now) are left out, even when they report a regression.
    jobs = {d: (0, "confirmed") for d in STAGE_0} | {d: (1, "confirmed") for d in STAGE_1}
    jobs |= {d: (1, "pending") for d in REST}
    ro = two_stages(db, jobs, stage_1_at=T0)
    fleet = Fleet()
    releases = {**dict.fromkeys([*STAGE_0, *STAGE_1], "rel-2"), **dict.fromkeys(REST, "rel-1")}
    send(fleet, range(1, 10), releases)
    send(fleet, range(1, 10), {f"other-{d}": "rel-2" for d in range(10)}, score=0.5)
    ingest(db, fleet)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 1, T0 + timedelta(minutes=10))  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.PASS, result.reason
    assert result.cohorts["canary_devices"] == 15


def test_the_window_starts_at_the_stage_start_not_at_its_bucket(db: Db) -> None:
    # The stage starts 5 s after the stage's devices sent a bad batch, inside the bucket that
    # batch is in: those rows were sent before the stage and are not the stage's.
    start = T0 + timedelta(minutes=1, seconds=5)
    jobs = {d: (0, "confirmed") for d in STAGE_0} | {d: (1, "confirmed") for d in STAGE_1}
    jobs |= {d: (1, "pending") for d in REST}
    ro = two_stages(db, jobs, stage_1_at=start)
    fleet = Fleet()
    canary = [*STAGE_0, *STAGE_1]
    send(fleet, range(1, 2), dict.fromkeys(canary, "rel-2"), score=0.5, latency=6000.0)
    send(fleet, range(2, 10), dict.fromkeys(canary, "rel-2"))
    send(fleet, range(1, 10), dict.fromkeys(REST, "rel-1"))
    ingest(db, fleet)
    result = TelemetryGate(db.store, db.storage).evaluate(ro, 1, T0 + timedelta(minutes=10))  # type: ignore[arg-type]
    assert result is not None and result.verdict is Verdict.PASS, result.reason
    [verdict] = db.store.verdicts("ro-1")
    assert verdict["numbers"]["canary_inferences"] == 15 * 40 * 8


def test_a_device_added_to_a_group_counts_from_its_first_batch(db: Db) -> None:
    now = T0
    groups = StorageGroups(db.storage, clock=lambda: now)
    with db.storage.begin() as uow:
        uow.groups.put(DeviceGroup("grp-berlin", "berlin", GroupKind.TAG, "site=berlin"))
    assert list(groups("dev-new")) == []  # the map is loaded now; dev-new is not registered
    now = T0 + timedelta(seconds=5)
    with db.storage.begin() as uow:
        uow.devices.upsert(
            [
                Device(
                    id="dev-new",
                    hardware_id="mt3620",
                    profile="kws",
                    agent_version="1.0.0",
                    tags={"site": "berlin"},
                    reported={},
                    last_seen=None,
                    created_at=now,
                )
            ]
        )
    groups.invalidate()  # the device registered after the map was loaded: a group change
    assert list(groups("dev-new")) == ["grp-berlin"]


def test_an_unknown_device_is_looked_up_at_its_first_batch(db: Db) -> None:
    now = T0
    groups = StorageGroups(db.storage, clock=lambda: now)
    with db.storage.begin() as uow:
        uow.groups.put(DeviceGroup("grp-berlin", "berlin", GroupKind.TAG, "site=berlin"))
    groups.refresh()
    fleet = Fleet()
    fleet.send(fleet.batch("dev-late", "rel-2"))
    with db.storage.begin() as uow:
        uow.devices.upsert(
            [
                Device(
                    id="dev-late",
                    hardware_id="mt3620",
                    profile="kws",
                    agent_version="1.0.0",
                    tags={"site": "berlin"},
                    reported={},
                    last_seen=None,
                    created_at=now,
                )
            ]
        )
    IngestWorker(fleet.source, db.store, groups_of=groups).drain()
    cohort = db.store.cohort("grp-berlin", "rel-2", T0 - timedelta(minutes=1))
    assert cohort.devices == {"dev-late"} and cohort.inferences == 10
