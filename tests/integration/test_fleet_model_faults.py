"""A model that misbehaves on part of the fleet, as a hardware revision or a sensor variant would
make it: the seeded draw picks the same share of devices on every run without moving the older
draws, and on the picked devices (in-process cores) the new model's self-test fails, so every
core stays on the old one, or the new model installs and then crashes its cores on every boot,
which the agents report as crash events."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from device_agent.protocol.telemetry import SCHEMA, EventRecord, TelemetryBatch, decode_batch
from firmware.faults import CRASH_EXIT_CODE
from infra.fleet import Fleet, FleetError, FleetOptions
from infra.hub import FeedConsumer, TelemetryFeed
from tests.agent_world import wait_for
from tests.integration import test_fleet
from tests.integration.test_fleet import World

world = test_fleet.world  # the fixture: a hub and a trust service with r1 (v1) and r2 (v2)

# What the seeded draw gave these devices before the model faults were added (seed 7, each
# older share 0.5): the new draws come after these and must leave them as they were.
OLDER_DRAWS = {
    "dev-001": (1677, None, -12.56819086076748),
    "dev-002": (1515, None, 4.140878931218992),
    "dev-003": (910, None, 0.0),
    "dev-004": (None, 34.20436922498055, 0.0),
}


def _fleet(world: World, options: FleetOptions, groups: dict[str, int] | None) -> Fleet:
    roots = {"image_root": b"{}", "director_root": b"{}"}
    return Fleet(world.hub, world.tmp / "fleet", groups=groups, options=options, **roots)


def test_model_faults_pick_a_seeded_share_and_leave_the_older_draws_alone(
    world: World,
) -> None:
    older = {"download_cut_share": 0.5, "sleepy_share": 0.5, "clock_skew_share": 0.5}
    options = FleetOptions(
        **older,
        behaviour_seed=7,
        bad_model_version="2.0.0",
        selftest_fail_share=0.1,
        crash_share=0.3,
    )
    fleets = [_fleet(world, options, {"main": 400} if n == 0 else None) for n in range(2)]
    plans = [{d: f.behaviour_of(d) for d in sorted(f.identities)} for f in fleets]
    assert plans[0] == plans[1]
    failing = sum(p["fails_selftest"] for p in plans[0].values())
    crashing = sum(p["crashes"] for p in plans[0].values())
    assert 20 <= failing <= 60 and 80 <= crashing <= 160  # about 10 % and 30 % of 400
    without = _fleet(world, FleetOptions(**older, behaviour_seed=7), None)
    keys = ("download_cut_after", "first_sleep_s", "clock_skew_s")
    for device_id, plan in plans[0].items():
        before = without.behaviour_of(device_id)
        assert not (before["fails_selftest"] or before["crashes"])
        assert {k: plan[k] for k in keys} == {k: before[k] for k in keys}
    for device_id, (cut, sleep, skew) in OLDER_DRAWS.items():
        plan = plans[0][device_id]
        assert (plan["download_cut_after"], plan["first_sleep_s"]) == (cut, sleep)
        assert plan["clock_skew_s"] == pytest.approx(skew)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crash_share": 0.2}, "need a bad_model_version"),
        ({"selftest_fail_share": 0.2, "bad_model_version": ""}, "need a bad_model_version"),
        ({"crash_share": 1.5, "bad_model_version": "2.0.0"}, "between 0 and 1"),
        ({"selftest_fail_share": -0.1, "bad_model_version": "2.0.0"}, "between 0 and 1"),
        ({"crash_after_inferences": -1}, "0 or more"),
    ],
    ids=["crash-without-version", "selftest-empty-version", "share-above-1", "share-below-0",
         "negative-count"],
)  # fmt: skip
def test_bad_model_fault_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(FleetError, match=message):
        FleetOptions(**options)


def _versions(world: World, device_id: str) -> dict[str, Any]:
    cores = world.agent(device_id).get("cores", {})
    return {
        core: (c.get("activeModel") or {}).get("version") if c.get("state") == "running" else None
        for core, c in cores.items()
    }


class _Feed:
    """The fleet's telemetry batches, as the hub's feed delivers them."""

    def __init__(self, world: World) -> None:
        self._feed = FeedConsumer(TelemetryFeed.open(world.hub.server.config.feed_path), "tests")
        self.batches: list[TelemetryBatch] = []

    def _read(self) -> None:
        for event in self._feed.receive(1000):
            if event.properties.get("tf-schema") == SCHEMA:
                self.batches.append(decode_batch(event.body, device_id=event.device_id))

    def events(self, kind: str) -> list[tuple[str, EventRecord]]:
        self._read()
        return [(b.device_id, e) for b in self.batches for e in b.events if e.kind == kind]

    def results(self, version: str) -> Counter[tuple[str, str]]:
        """(device, core) -> inference results of models of `version` received so far."""
        self._read()
        return Counter(
            (b.device_id, r.core)
            for b in self.batches
            for r in b.inference
            if r.model_version == version
        )


def _install(world: World, devices: list[str], release: str, *, wait: bool = True) -> None:
    for device_id in devices:
        world.deploy(device_id, release, f"wf-{release}-{device_id}")
    if wait:
        wait_for(
            lambda: all(world.installed(d) == release for d in devices),
            120,
            f"{release} everywhere",
        )


def test_a_fleet_whose_cores_fail_the_new_models_self_test_stays_on_the_old_one(
    world: World,
) -> None:
    fleet = world.fleet(
        {"main": 3}, core_mode="inprocess", selftest_fail_share=1.0, bad_model_version="2.0.0"
    )
    devices = sorted(fleet.identities)
    feed = _Feed(world)
    with fleet:
        _install(world, devices, "r1")
        _install(world, devices, "r2", wait=False)
        wait_for(
            lambda: all(world.agent(d).get("state") == "failed" for d in devices), 120, "r2 failed"
        )
        for device_id in devices:
            result = world.agent(device_id)["lastResult"]
            assert result["step"] == "activate", result
            assert result["detail"].startswith("every core reverted"), result
            assert world.installed(device_id) == "r1"
            wait_for(
                lambda d=device_id: _versions(world, d) == {"m4-0": "1.0.0", "m4-1": "1.0.0"},
                60,
                f"both cores of {device_id} on v1",
            )
        wait_for(
            lambda: {d for d, _ in feed.events("selftest")} == set(devices), 60, "selftest events"
        )
        failed = [e for _, e in feed.events("selftest")]
        assert all((e.code, e.reason) == (1, "selftest-failed") for e in failed), failed
        assert fleet.core_reboots == 0  # nothing crashed: the cores refused the model


def test_a_fleet_whose_cores_crash_on_the_new_model_reports_the_crashes(
    world: World,
) -> None:
    fleet = world.fleet(
        {"main": 3},
        core_mode="inprocess",
        crash_share=1.0,
        bad_model_version="2.0.0",
        crash_after_inferences=10,  # 2 s at 0.2 s a result: the swap is confirmed well before
    )
    devices = sorted(fleet.identities)
    feed = _Feed(world)
    every_core = {(d, c) for d in devices for c in ("m4-0", "m4-1")}
    with fleet:
        _install(world, devices, "r1")
        # v1 runs on the same cores well past the count at which v2 crashes them
        wait_for(
            lambda: {k for k, n in feed.results("1.0.0").items() if n > 15} == every_core,
            120,
            "more than 15 v1 results from every core",
        )
        assert not feed.events("crash")
        _install(world, devices, "r2")

        def crashed_everywhere() -> bool:
            return {(d, e.core) for d, e in feed.events("crash")} == every_core

        wait_for(crashed_everywhere, 120, "a crash event from every core")
        crashes = [e for _, e in feed.events("crash")]
        assert all(e.code == CRASH_EXIT_CODE and e.release_id == "r2" for e in crashes), crashes
        assert all(f"exited with code {CRASH_EXIT_CODE}" in e.reason for e in crashes), crashes
        assert all(" 2.0.0 in slot " in e.reason for e in crashes), crashes
        # the agents boot the cores again: they run v2 again and crash again, every boot
        wait_for(lambda: fleet.core_reboots >= 6, 120, "every core booted again")
        wait_for(lambda: len(feed.events("crash")) > 6, 120, "crashes after the reboots")
