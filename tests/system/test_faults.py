"""Faults during a rollout, on the whole local stack (hub, service runtime, fleet of 4 devices).

Each test rolls v2 out to a group running v1 and injects one fault while it runs: the service is
killed and restarted; the hub is restarted; a device's network is cut in the middle of a target
download; a core loses power in the middle of a swap. Each must end the same way: the rollout
`completed`, every device running v2 on both cores, and every telemetry message the hub
acknowledged (it is in the hub's feed) counted by the service once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from device_agent.protocol import TelemetryError, decode_batch
from infra.fleet import Fleet, FleetOptions
from infra.hub import TelemetryFeed
from infra.stack import Stack, StackOptions
from infra.telemetry_source import source_event
from service.cli._demo_fleet import Api, DemoFailed, prepare, stage, start_rollout, watch
from tests.agent_world import wait_for

GROUP = {"main": 4}
TIMEOUT = 180.0


@dataclass
class Harness:
    stack: Stack
    api: Api

    @property
    def fleet(self) -> Fleet:
        assert self.stack.fleet is not None
        return self.stack.fleet

    def reconnect_api(self) -> None:
        self.api.close()
        service = self.stack.addresses
        self.api = Api(str(service["api_url"]), str(service["admin_token"]))

    def start_v2(self, success_percent: int = 100) -> None:
        stages = [stage("first", None, 3, count=2), stage("rest", 100, 3)]
        # A device may end reverted (a swap that failed on the device) without
        # stopping the rollout (1 of the first stage's 2 is 50 %); a majority would pause it.
        failure = {"threshold_percent": 60, "min_devices": 2, "action": "pause"}
        success = {"threshold_percent": success_percent, "advance": "auto", "require_gate": False}
        start_rollout(
            self.api, "v2", "models-v2", "main", "models-v1", stages,
            failure=failure, success=success,
        )  # fmt: skip

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.api.call("GET", "/rollouts/v2/jobs", params={"limit": 1000})["items"])

    def any_job_in(self, *states: str) -> bool:
        return any(job["state"] in states for job in self.jobs())

    def finish(self, reverted: frozenset[str] = frozenset()) -> None:
        """The rollout completes; every device runs v2 on both cores, except the `reverted` ones,
        which run v1 again on both (a working model); no acknowledged telemetry is lost."""
        try:
            rollout = watch(self.api, "v2", TIMEOUT, quiet=True)
        except DemoFailed as exc:
            raise AssertionError(f"{exc}; jobs: {self.jobs()}") from exc
        assert rollout["state"] == "completed", rollout
        confirmed = sum(GROUP.values()) - len(reverted)

        def totals() -> dict[str, int]:
            return dict(self.api.call("GET", "/rollouts/v2")["totals"])

        # below 100 % the rollout may complete while a job still soaks: it finishes after
        wanted = {"confirmed": confirmed, **({"reverted": len(reverted)} if reverted else {})}
        wait_for(lambda: totals() == wanted, 60, f"job totals {wanted}")
        expected = {
            d: {"1.0.0" if d in reverted else "2.0.0"} for d in sorted(self.fleet.identities)
        }
        hub = self.stack.hub
        assert hub is not None

        def versions() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            for device_id in self.fleet.identities:
                reported = hub.core.store.twins[device_id].reported
                cores = reported.get("tinyfleet", {}).get("agent", {}).get("cores", {})
                found[device_id] = {
                    str((c.get("activeModel") or {}).get("version")) for c in cores.values()
                }
            return found

        wait_for(lambda: hub.call(versions) == expected, 60, f"the devices on {expected}")
        self.fleet.stop()  # the feed is final from here on
        self.no_acknowledged_telemetry_lost()

    def no_acknowledged_telemetry_lost(self) -> None:
        hub = self.stack.hub
        assert hub is not None
        acknowledged = _feed_inference_rows(hub.server.config.feed_path)
        assert acknowledged > 0

        def ingested() -> int:
            stats = self.api.call("GET", "/telemetry/stats")
            if any(int(n) for n in (stats.get("lag") or {}).values()):
                return -1
            summary = self.api.call("GET", "/telemetry/summary", params={"bucket": "hour"})
            return sum(int(item["count"]) for item in summary["items"])

        wait_for(lambda: ingested() == acknowledged, 60, f"{acknowledged} rows ingested")


def _feed_inference_rows(path: Path) -> int:
    """Inference rows in the hub's feed, each message counted once (by device and message id)."""
    feed = TelemetryFeed.open(path)
    seen: set[tuple[str | None, str | None]] = set()
    rows = 0
    try:
        for partition in feed.partition_ids:
            after = -1
            while events := feed.read(partition, after, 500):
                after = events[-1].sequence_number
                for event in events:
                    source = source_event(event)
                    key = (source.device_id, source.message_id)
                    if source.message_id is not None and key in seen:
                        continue
                    seen.add(key)
                    try:
                        batch = decode_batch(event.body, device_id=source.device_id or "")
                    except TelemetryError:
                        continue
                    rows += len(batch.inference)
    finally:
        feed.close()
    return rows


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    options = StackOptions(
        data_dir=tmp_path / "stack",
        groups=GROUP,
        api_port=0,
        engine_interval_s=0.3,
        fleet=FleetOptions(inference_period_s=0.25, health_interval_s=2.0, backoff_max_s=1.0),
    )
    stack = Stack(options)
    stack.start()
    try:
        service = stack.addresses
        api = Api(str(service["api_url"]), str(service["admin_token"]))
        prepare(api, GROUP, TIMEOUT, 2)
        h = Harness(stack, api)
        yield h
        h.api.close()
    finally:
        stack.stop()


def _during(h: Harness, condition: Callable[[], bool], what: str) -> None:
    wait_for(condition, TIMEOUT, what)


def test_service_killed_and_restarted_during_a_rollout(harness: Harness) -> None:
    harness.start_v2()
    _during(harness, lambda: harness.any_job_in("offered", "downloading", "soaking"), "in flight")
    harness.stack.restart_service()
    harness.reconnect_api()
    harness.finish()


def test_hub_restarted_during_a_rollout(harness: Harness) -> None:
    harness.start_v2()
    _during(harness, lambda: harness.any_job_in("offered", "downloading", "soaking"), "in flight")
    harness.stack.restart_hub()
    harness.finish()


def test_device_network_cut_during_a_download(harness: Harness) -> None:
    device_id = sorted(harness.fleet.identities)[0]
    harness.fleet.cut_during_download(device_id, b"/targets/", after_bytes=1500)
    harness.start_v2()
    _during(harness, lambda: harness.fleet.is_cut(device_id), "the cut mid-download")
    harness.fleet.reconnect(device_id)
    harness.finish()


def test_core_killed_mid_swap(harness: Harness) -> None:
    device_id = sorted(harness.fleet.identities)[0]
    harness.fleet.stop_device(device_id)
    harness.fleet.start_device(device_id, crash_points={"m4-0": "activate:recorded"})
    harness.start_v2(success_percent=50)  # the crashed device's job ends reverted
    _during(harness, lambda: harness.fleet.core_reboots >= 1, "the crashed core rebooted")
    harness.finish(reverted=frozenset({device_id}))
