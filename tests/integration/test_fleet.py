"""The fleet host: devices provisioned in groups, installing over the hub, cut from the network,
restarted on the same folder, and losing a core process."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from device_agent.protocol.summary import SUMMARY_SCHEMA
from infra.fleet import Fleet, FleetError, FleetOptions, parse_groups
from infra.fleet_host import spawn_hosts
from infra.hub import BackgroundHub, FeedConsumer, HubConfig, TelemetryFeed
from infra.simdevice import InProcessCore
from service.config import Settings
from service.trust import ArtifactSpec, TrustService
from signing.keys import DEV_PASSPHRASE, KeyScheme
from tests.agent_world import PREBUILT, wait_for


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class World:
    tmp: Path
    trust: TrustService
    hub: BackgroundHub
    base: str

    def fleet(self, groups: dict[str, int] | None, **options: Any) -> Fleet:
        return Fleet(
            self.hub,
            self.tmp / "fleet",
            image_root=self.trust.image().root_bytes(),
            director_root=self.trust.director().root_bytes(),
            groups=groups,
            options=FleetOptions(inference_period_s=0.2, health_interval_s=1.0, **options),
        )

    def twin(self, device_id: str) -> Any:
        return self.hub.call(lambda: self.hub.core.store.twins[device_id])

    def agent(self, device_id: str) -> dict[str, Any]:
        reported = self.twin(device_id).reported
        return dict(reported.get("tinyfleet", {}).get("agent", {}))

    def online(self, device_id: str) -> bool:
        return bool(self.hub.call(lambda: device_id in self.hub.core.links))

    def deploy(self, device_id: str, release_id: str, workflow_id: str) -> None:
        self.trust.assign(device_id, "mt3620", release_id, datetime.now(UTC))
        service = {
            "workflow": {"action": 3, "id": workflow_id},
            "repository": {
                "imageUrl": f"{self.base}/image/metadata/",
                "directorUrl": f"{self.base}/director/devices/{device_id}/metadata/",
                "targetsUrl": f"{self.base}/image/targets/",
            },
        }
        body = {"properties": {"desired": {"tinyfleet": {"__t": "c", "service": service}}}}
        self.hub.call(self.hub.core.update_twin, device_id, body, None, replace_all=False)

    def installed(self, device_id: str) -> str | None:
        value = self.agent(device_id).get("installedReleaseId")
        return None if value is None else str(value)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    trust = TrustService(Settings(data_dir=tmp_path / "svc"), lambda: DEV_PASSPHRASE)
    trust.init_keys(KeyScheme.ED25519)
    now = datetime.now(UTC)
    trust.init_repos(now)
    for release_id, version, counter in (("r1", "1.0.0", 1), ("r2", "2.0.0", 2)):
        specs = [
            ArtifactSpec.from_file(
                PREBUILT / f"{line}-v{version}.tflite", core, ["mt3620"], counter
            )
            for line, core in (("kws", "m4-0"), ("vibration", "m4-1"))
        ]
        trust.sign_release(release_id, counter, ["mt3620"], specs, now)
    handler = functools.partial(_Quiet, directory=str(trust.settings.repo_dir))
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    config = HubConfig(data_dir=tmp_path / "hub", mqtt_port=0, https_port=0)
    with BackgroundHub(config) as hub:
        try:
            yield World(tmp_path, trust, hub, f"http://localhost:{http.server_address[1]}")
        finally:
            http.shutdown()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("canary:2,main:18", {"canary": 2, "main": 18}), (" a:1 , b:0 ", {"a": 1, "b": 0})],
    ids=["two-groups", "spaces-and-empty-group"],
)
def test_group_lists_parse(text: str, expected: dict[str, int]) -> None:
    assert parse_groups(text) == expected


@pytest.mark.parametrize("text", ["", "canary", "canary:x", "a:1,a:2", ":3"])
def test_bad_group_lists_are_refused(text: str) -> None:
    with pytest.raises(FleetError):
        parse_groups(text)


def test_fleet_devices_connect_in_groups_install_and_survive_faults(world: World) -> None:
    fleet = world.fleet({"canary": 1, "main": 2})
    assert sorted(fleet.identities) == ["dev-001", "dev-002", "dev-003"]
    assert fleet.members("canary") == ["dev-001"]
    assert fleet.members("main") == ["dev-002", "dev-003"]
    for device_id, identity in fleet.identities.items():
        assert world.twin(device_id).tags == {
            "group": identity.group,
            "hardwareId": "mt3620",
            "profile": "mt3620",
        }

    with fleet:
        for device_id in fleet.identities:
            wait_for(lambda d=device_id: world.online(d), 60, f"{device_id} online")
        pids = {d: fleet.core_pids(d) for d in fleet.identities}
        assert len({pid for cores in pids.values() for pid in cores.values()}) == 6

        for device_id in fleet.identities:
            world.deploy(device_id, "r1", f"wf-r1-{device_id}")
        for device_id in fleet.identities:
            wait_for(lambda d=device_id: world.installed(d) == "r1", 120, f"r1 on {device_id}")

        # a cut device drops off the hub and misses a deployment until it is reconnected
        fleet.disconnect("dev-002")
        assert fleet.is_cut("dev-002")
        wait_for(lambda: not world.online("dev-002"), 60, "dev-002 offline")
        world.deploy("dev-002", "r2", "wf-r2-dev-002")
        world.deploy("dev-003", "r2", "wf-r2-dev-003")
        wait_for(lambda: world.installed("dev-003") == "r2", 120, "r2 on dev-003")
        assert world.installed("dev-002") == "r1"
        assert not world.online("dev-002")
        fleet.reconnect("dev-002")
        wait_for(lambda: world.installed("dev-002") == "r2", 120, "r2 on dev-002 after the cut")

        # a core power cut (SIGKILL); power comes back and the core boots its model again
        before = fleet.core_pids("dev-001")["m4-1"]
        assert fleet.kill_core("dev-001", "m4-1") == -9
        wait_for(lambda: fleet.core_pids("dev-001")["m4-1"] != before, 60, "the core rebooted")
        assert fleet.devices["dev-001"].processes["m4-1"].alive
        wait_for(lambda: fleet.core_reboots == 1, 30, "the reboot counted")

        def back() -> bool:
            core = world.agent("dev-001")["cores"]["m4-1"]
            return core["state"] != "offline" and core["activeModel"]["version"] == "1.0.0"

        wait_for(back, 60, "m4-1 runs v1 again")
        with pytest.raises(FleetError):
            fleet.kill_core("dev-001", "m4-7")

    for device_id in fleet.identities:
        wait_for(lambda d=device_id: not world.online(d), 30, f"{device_id} gone after stop")

    # the same folder brings back the same devices, with what they had installed
    again = world.fleet(None)
    assert again.identities == fleet.identities
    with again:
        for device_id in again.identities:
            wait_for(lambda d=device_id: world.online(d), 60, f"{device_id} back online")
        cores = world.agent("dev-003")["cores"]
        assert {c["activeModel"]["version"] for c in cores.values()} == {"2.0.0"}
        assert world.installed("dev-001") == "r1"


def test_growing_a_group_keeps_existing_devices(world: World) -> None:
    first = world.fleet({"canary": 1})
    grown = world.fleet({"canary": 1, "main": 1})
    assert first.identities["dev-001"] == grown.identities["dev-001"]
    assert grown.members("main") == ["dev-002"]
    with pytest.raises(FleetError):
        grown.group_of("dev-009")


def test_a_cut_during_a_download_resumes_after_reconnect(world: World) -> None:
    fleet = world.fleet({"main": 1})
    with fleet:
        world.deploy("dev-001", "r1", "wf-1")
        wait_for(lambda: world.installed("dev-001") == "r1", 120, "r1")
        fleet.cut_during_download("dev-001", b"/targets/", after_bytes=1500)
        world.deploy("dev-001", "r2", "wf-2")
        wait_for(lambda: fleet.is_cut("dev-001"), 60, "the cut mid-download")
        assert world.installed("dev-001") == "r1"
        fleet.reconnect("dev-001")
        wait_for(lambda: world.installed("dev-001") == "r2", 120, "r2 after the cut")
        cores = world.agent("dev-001")["cores"]
        assert {c["activeModel"]["version"] for c in cores.values()} == {"2.0.0"}


def test_a_core_crash_mid_swap_leaves_a_working_model(world: World) -> None:
    fleet = world.fleet({"main": 1})
    with fleet:
        world.deploy("dev-001", "r1", "wf-1")
        wait_for(lambda: world.installed("dev-001") == "r1", 120, "r1")
        fleet.stop_device("dev-001")
        fleet.start_device("dev-001", crash_points={"m4-0": "activate:recorded"})
        before = fleet.core_pids("dev-001")["m4-0"]
        world.deploy("dev-001", "r2", "wf-2")
        wait_for(lambda: fleet.core_pids("dev-001")["m4-0"] != before, 120, "the core rebooted")

        def settled() -> bool:
            agent = world.agent("dev-001")
            return agent.get("state") in ("idle", "failed") and agent.get("lastResult") is not None

        wait_for(settled, 120, "the update settled")
        wait_for(lambda: fleet.core_reboots == 1, 60, "the crashed core booted again")
        # the swap failed and the device is back on r1 on both cores, both running
        assert world.installed("dev-001") == "r1"
        assert world.agent("dev-001")["lastResult"]["step"] == "activate"

        def on(version: str) -> bool:
            cores = world.agent("dev-001")["cores"].values()
            return all(
                c["state"] == "running" and c["activeModel"]["version"] == version for c in cores
            )

        wait_for(lambda: on("1.0.0"), 60, "both cores run v1")
        # the service retries with a new workflow: the crash was a one-off, so r2 goes in
        world.deploy("dev-001", "r2", "wf-3")
        wait_for(lambda: world.installed("dev-001") == "r2", 120, "r2 on the retry")
        wait_for(lambda: on("2.0.0"), 60, "both cores run v2")


@pytest.mark.parametrize("core_mode", ["process", "inprocess"])
def test_fleet_hosts_run_a_provisioned_fleet_split_across_processes(
    world: World, core_mode: str
) -> None:
    # provisioned here, in the hub's process
    fleet = world.fleet({"canary": 1, "main": 4}, core_mode=core_mode)
    hosts = spawn_hosts(fleet, 2, report_s=0.2)
    try:
        assert sorted(s["devices"] for s in hosts.status().values()) == [2, 3]
        devices = sorted(fleet.identities)
        wait_for(lambda: all(world.online(d) for d in devices), 60, "every device online")
        for device_id in devices:
            world.deploy(device_id, "r1", f"wf-r1-{device_id}")
        wait_for(lambda: all(world.installed(d) == "r1" for d in devices), 180, "r1 everywhere")
        wait_for(
            lambda: sum(s["connected"] for s in hosts.status().values()) == len(devices),
            30,
            "the hosts to report every device connected",
        )
        assert all(s["rss_bytes"] > 0 and s["cpu_s"] > 0 for s in hosts.status().values())
    finally:
        codes = hosts.stop()
    assert codes == [0, 0]  # each host stopped its devices in order and exited cleanly
    assert not any(world.online(d) for d in fleet.identities)


def test_a_fleet_host_cannot_provision_and_refuses_a_missing_slice(world: World) -> None:
    fleet = world.fleet({"main": 2})
    remote = fleet.access()
    roots = {"image_root": fleet.roots[0], "director_root": fleet.roots[1]}
    with pytest.raises(FleetError, match="provisioned by the process that runs the hub"):
        Fleet(remote, world.tmp / "fleet", groups={"main": 3}, **roots)
    with pytest.raises(FleetError, match="host 2 of 2 does not exist"):
        Fleet(remote, world.tmp / "fleet", share=(2, 2), **roots)
    half = Fleet(remote, world.tmp / "fleet", share=(1, 2), **roots)
    assert list(half.identities) == [sorted(fleet.identities)[1]]


def test_seeded_behaviour_picks_the_same_share_of_devices_on_every_run(world: World) -> None:
    options = FleetOptions(download_cut_share=0.1, sleepy_share=0.3, behaviour_seed=7)
    fleets = [
        Fleet(
            world.hub,
            world.tmp / "fleet",
            image_root=b"{}",
            director_root=b"{}",
            groups={"main": 400} if n == 0 else None,
            options=options,
        )
        for n in range(2)
    ]
    plans = [{d: f.behaviour_of(d) for d in sorted(f.identities)} for f in fleets]
    assert plans[0] == plans[1]
    cut = sum(p["download_cut_after"] is not None for p in plans[0].values())
    sleepy = sum(p["first_sleep_s"] is not None for p in plans[0].values())
    assert 20 <= cut <= 60 and 80 <= sleepy <= 160  # about 10 % and 30 % of 400
    with pytest.raises(FleetError, match="between 0 and 1"):
        FleetOptions(download_cut_share=1.5)


def test_devices_cut_during_a_download_or_asleep_still_install(world: World) -> None:
    fleet = world.fleet(
        {"main": 2},
        download_cut_share=1.0,
        download_cut_s=1.0,
        sleepy_share=1.0,
        awake_s=6.0,
        asleep_s=1.0,
    )
    with fleet:
        devices = sorted(fleet.identities)
        wait_for(lambda: all(world.online(d) for d in devices), 60, "every device online")
        wait_for(lambda: not all(world.online(d) for d in devices), 60, "a device asleep")
        for device_id in devices:
            world.deploy(device_id, "r1", f"wf-r1-{device_id}")
        wait_for(lambda: all(world.installed(d) == "r1" for d in devices), 180, "r1 everywhere")
        assert fleet.download_cuts == 2  # each device's download was cut once, and resumed


def test_an_inprocess_fleet_installs_and_sends_summaries_on_skewed_clocks(world: World) -> None:
    fleet = world.fleet(
        {"main": 3},
        core_mode="inprocess",
        relay_all=False,  # no cut behaviour either: every device connects straight
        agent_poll_s=0.5,
        summary_interval_s=1.0,
        raw_sample_rate=0.0,
        clock_skew_share=1.0,
        clock_skew_max_s=120.0,
    )
    devices = sorted(fleet.identities)
    skews = {d: fleet.behaviour_of(d)["clock_skew_s"] for d in devices}
    assert all(0 < abs(s) <= 120.0 for s in skews.values()) and len(set(skews.values())) == 3
    feed = FeedConsumer(TelemetryFeed.open(world.hub.server.config.feed_path), "tests")
    with fleet:
        running = [fleet.devices[d].processes[c] for d in devices for c in ("m4-0", "m4-1")]
        assert all(isinstance(core, InProcessCore) for core in running)
        with pytest.raises(FleetError, match="no relay"):
            fleet.disconnect(devices[0])
        for device_id in devices:
            world.deploy(device_id, "r1", f"wf-r1-{device_id}")
        wait_for(lambda: all(world.installed(d) == "r1" for d in devices), 120, "r1 everywhere")
        summaries: list[Any] = []

        def summarised() -> bool:
            summaries.extend(
                e for e in feed.receive(1000) if e.properties.get("tf-schema") == SUMMARY_SCHEMA
            )
            return {e.device_id for e in summaries} == set(devices)

        wait_for(summarised, 60, "a summary from every device")
    for event in summaries:
        # An interval closes on the device's own clock: its end is the hub's receive time
        # moved by that device's skew (less the moments it waited to close and be sent).
        for summary in event.body_as_json()["summaries"]:
            end_s = (summary[3] + summary[4]) / 1000
            late = event.enqueued_ms / 1000 + skews[event.device_id] - end_s
            assert -0.5 < late < 5.0, (event.device_id, late)
