"""A simulated fleet: N devices in one process, each with its own hub session and core processes.

Every device is a `SimulatedDevice`: its agent speaks MQTT over TLS to the hub on its own
connection, and its two M4 cores are separate processes speaking the inter-core protocol. The
fleet adds what a fleet needs around them:

- identity that survives restarts: each device is provisioned on the hub once, and its connection
  string, group and core seeds live in `DATA/<device id>/identity.json` next to the agent's and
  cores' state, so a restart on the same folder brings back the same devices with their models;
- groups as twin tags (`group=canary|main`, with `hardwareId` and `profile`), written once when
  the device is provisioned;
- a network cut per device: every connection a device opens to a loopback service (the hub's MQTT
  listener, the blob store's HTTP server) goes through a relay of that device's own, and
  `disconnect(device)` drops the open connections and refuses new ones until `reconnect(device)`;
- core faults: `kill_core` is a power cut of one core process; the device's agent restarts a
  core that exits (with back-off), as the board's A7 does; a seeded share of devices can fail
  the self-test of one model version, or crash on it (`FleetOptions.bad_model_version`).

Invariants:
- A device id is provisioned at most once per data folder; its group never changes after that.
- While a device is cut, no byte flows between it and any loopback service it talks to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import signal
import threading
from collections.abc import Collection, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from device_agent.hub_client import HubOptions
from device_agent.hub_dialect import ConnectionString
from device_agent.protocol import DesiredService
from device_agent.target_source import HttpTargetSource, TargetSource
from infra._relay import Relay
from infra.hub import BackgroundHub, provision_devices
from infra.simdevice import CORE_MODES, CoreMode, CoreSpec, QueryFetcher, SimulatedDevice
from signing.device_ids import device_segment
from signing.files import atomic_write

__all__ = [
    "DeviceIdentity",
    "Fleet",
    "FleetError",
    "FleetOptions",
    "HubAccess",
    "host_slice",
    "parse_groups",
]

T = TypeVar("T")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class FleetError(RuntimeError):
    """The fleet cannot do what was asked (unknown device, bad group list, lost identity)."""


def parse_groups(text: str) -> dict[str, int]:
    """`canary:2,main:18` -> {"canary": 2, "main": 18} (order kept)."""
    groups: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition(":")
        if not sep or not name or not count.isdigit():
            raise FleetError(f"group {part!r} is not NAME:COUNT (e.g. canary:2,main:18)")
        if name in groups:
            raise FleetError(f"group {name!r} is named twice")
        groups[name] = int(count)
    if not groups:
        raise FleetError("give at least one group, e.g. canary:2,main:18")
    return groups


@dataclass(frozen=True)
class FleetOptions:
    hardware_id: str = "mt3620"
    profile: str = "mt3620"
    prefix: str = "dev"
    inference_period_s: float = 0.5
    heartbeat_period_s: float = 5.0  # each core's heartbeat (keep core silence above 3 of them)
    health_interval_s: float = 30.0
    backoff_max_s: float = 5.0  # devices come back quickly after a cut or a hub restart
    reboot_dead_cores: bool = True  # each agent restarts a core that exits (power comes back)
    # "process": two OS processes of cores per device (the default; real processes to kill);
    # "inprocess": every core of this process on one reactor thread (thousands of devices).
    core_mode: str = "process"
    # Every device's connections go through a relay of its own that can cut them (the fault
    # tests' disconnect/reconnect). False: only devices whose seeded behaviour cuts their link
    # get one; the others connect straight, sparing the fleet's network thread every byte.
    relay_all: bool = True
    agent_poll_s: float | None = None  # how often an idle agent loop wakes (None: 0.1 s)
    summary_interval_s: float = 0.0  # > 0: agents send telemetry summaries per interval
    raw_sample_rate: float = 1.0  # with summaries: the share of raw inference rows kept
    telemetry_flush_s: float = 0.0  # agents send telemetry at most once per this (0: at once)
    liveness_report_s: float = 5.0  # agents refresh cores' liveness in the twin at most this often
    # Seeded behaviour (the same devices behave the same way on every run with one seed):
    behaviour_seed: int = 0
    download_cut_share: float = 0.0  # devices whose link is cut once during a target download
    download_cut_s: float = 5.0  # how long such a cut lasts
    sleepy_share: float = 0.0  # devices that sleep (link cut) `asleep_s` after `awake_s` up
    awake_s: float = 60.0
    asleep_s: float = 20.0
    clock_skew_share: float = 0.0  # devices whose clock is off by up to clock_skew_max_s
    clock_skew_max_s: float = 30.0
    # A model that misbehaves on part of the fleet (a hardware revision, a sensor variant): on
    # `selftest_fail_share` of the devices every core fails the self-test of models whose
    # version is `bad_model_version`; on `crash_share` a core running such a model crashes
    # after `crash_after_inferences` inferences of each boot. Older models run fine on both.
    bad_model_version: str | None = None
    selftest_fail_share: float = 0.0
    crash_share: float = 0.0
    crash_after_inferences: int = 5

    def __post_init__(self) -> None:
        if self.core_mode not in CORE_MODES:
            raise FleetError(f"core_mode must be one of {', '.join(CORE_MODES)}")
        shares = ("download_cut_share", "sleepy_share", "clock_skew_share")
        for name in (*shares, "selftest_fail_share", "crash_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FleetError(f"{name} must be between 0 and 1")
        if min(self.download_cut_s, self.awake_s, self.asleep_s) <= 0:
            raise FleetError("download_cut_s, awake_s and asleep_s must be positive")
        if (self.selftest_fail_share or self.crash_share) and not self.bad_model_version:
            raise FleetError("selftest_fail_share and crash_share need a bad_model_version")
        if self.crash_after_inferences < 0:
            raise FleetError("crash_after_inferences must be 0 or more")


def host_slice(device_ids: Collection[str], index: int, count: int) -> list[str]:
    """The devices host `index` of `count` runs: every count-th id in sorted order."""
    if not 0 <= index < count:
        raise FleetError(f"host {index} of {count} does not exist")
    return sorted(device_ids)[index::count]


@dataclass(frozen=True)
class HubAccess:
    """Where a fleet's devices reach a hub that runs in another process (a fleet host)."""

    ca_cert: Path
    mqtt_port: int


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    group: str
    connection_string: str
    seeds: tuple[int, int]

    def to_json(self) -> str:
        return json.dumps(
            {
                "device_id": self.device_id,
                "group": self.group,
                "connection_string": self.connection_string,
                "seeds": list(self.seeds),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DeviceIdentity:
        data = json.loads(text)
        seeds = data["seeds"]
        return cls(
            data["device_id"], data["group"], data["connection_string"], (seeds[0], seeds[1])
        )


class _FleetDevice(SimulatedDevice):
    """A simulated device whose HTTP requests to loopback services go through its relay."""

    route: Any = None  # Callable[[str], str], set right after construction

    def restart_core(self, core: str, firmware: Path | None = None) -> Any:
        # An armed crash point fires once: the core that reboots after it runs normally.
        self.specs[core].crash_point = None
        return super().restart_core(core, firmware)

    def _fetcher(self, desired: DesiredService) -> Any:
        route = self.route
        fetcher = super()._fetcher(desired)
        if not isinstance(fetcher, QueryFetcher) or route is None:
            return fetcher
        return _RoutedFetcher(desired.url_query, route)

    def _source(self, desired: DesiredService) -> TargetSource:
        url = desired.targets_url or ""
        if self.route is None or url.startswith("store:"):
            return super()._source(desired)
        return HttpTargetSource(self.route(url), desired.url_query)


class _RoutedFetcher(QueryFetcher):
    def __init__(self, query: str, route: Any) -> None:
        super().__init__(query)
        self._route = route

    def _fetch(self, url: str) -> Iterator[bytes]:
        return super()._fetch(self._route(url))


class Fleet:
    """N simulated devices provisioned on one hub, in groups, started and stopped together."""

    def __init__(
        self,
        hub: BackgroundHub | HubAccess,
        data_dir: Path,
        *,
        image_root: bytes,
        director_root: bytes,
        groups: dict[str, int] | None = None,
        options: FleetOptions | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        """`hub`: the hub in this process, or the address of one in another (then the devices
        must already be provisioned: `groups` None). `share`: (i, K) runs only host i's share
        of the folder's devices when K hosts split the fleet (`host_slice`)."""
        self.hub = hub
        self.data_dir = data_dir
        self.options = options or FleetOptions()
        self._roots = (image_root, director_root)
        self.identities = self._identities(groups)
        if share is not None:
            mine = set(host_slice(list(self.identities), *share))
            self.identities = {d: i for d, i in self.identities.items() if d in mine}
        self.devices: dict[str, SimulatedDevice] = {}
        self._relays: dict[str, Relay] = {}
        self._loop = asyncio.new_event_loop()
        self._reboots_of_stopped = 0
        self._sleepers: dict[str, concurrent.futures.Future[None]] = {}
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fleet-net", daemon=True
        )

    # -- identity ----------------------------------------------------------------------------------

    def _identities(self, groups: dict[str, int] | None) -> dict[str, DeviceIdentity]:
        """The devices of an earlier run first; new ones provisioned to reach the group counts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        known: dict[str, DeviceIdentity] = {}
        for path in sorted(self.data_dir.glob("*/identity.json")):
            identity = DeviceIdentity.from_json(path.read_text())
            known[identity.device_id] = identity
        if groups is None:
            if not known:
                raise FleetError(f"no devices in {self.data_dir}: give the groups to create")
            return known
        index, wanted = len(known), []
        for group, count in groups.items():
            have = sum(1 for i in known.values() if i.group == group)
            for _ in range(count - have):
                index += 1
                device_id = f"{self.options.prefix}-{index:03d}"
                while device_id in known:
                    index += 1
                    device_id = f"{self.options.prefix}-{index:03d}"
                known[device_id] = DeviceIdentity(device_id, group, "", (2 * index, 2 * index + 1))
                wanted.append(device_id)
        if wanted:
            known.update(self._provision([known[device_id] for device_id in wanted]))
        return known

    def _provision(self, new: list[DeviceIdentity]) -> dict[str, DeviceIdentity]:
        """Register the new devices on the hub in one transaction, tags included, and keep each
        identity beside its state (written last: a device without one is provisioned again)."""
        if not isinstance(self.hub, BackgroundHub):
            raise FleetError("new devices are provisioned by the process that runs the hub")
        provisioned = provision_devices(
            self.hub.server.config, [(i.device_id, self.tags(i.group)) for i in new]
        )
        made = {}
        for identity, device in zip(new, provisioned, strict=True):
            identity = replace(identity, connection_string=device.connection_string)
            folder = self.data_dir / device_segment(identity.device_id)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "identity.json", identity.to_json().encode())
            made[identity.device_id] = identity
        self.hub.call(self.hub.core.store.refresh_devices)  # the running hub sees them now
        return made

    def tags(self, group: str) -> dict[str, str]:
        """The twin tags written at provisioning: the group, and what the hardware is (so the
        registry knows it before the agent's first report)."""
        return {
            "group": group,
            "hardwareId": self.options.hardware_id,
            "profile": self.options.profile,
        }

    def group_of(self, device_id: str) -> str:
        return self._identity(device_id).group

    def members(self, group: str) -> list[str]:
        return sorted(d for d, i in self.identities.items() if i.group == group)

    def _identity(self, device_id: str) -> DeviceIdentity:
        try:
            return self.identities[device_id]
        except KeyError:
            raise FleetError(f"no device {device_id!r} in this fleet") from None

    # -- lifecycle ---------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Run `fn(*args)` on the relay loop and wait for it (relay state is the loop's)."""

        async def call() -> None:
            fn(*args)

        self._run(call())

    def start(self) -> None:
        # Ctrl-C in a terminal reaches the whole foreground process group: the core processes
        # must leave it to the host, which stops them in order. Threads and processes started
        # from here inherit a blocked SIGINT (an agent thread restarting a core passes it on).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        for device_id in self.identities:
            if device_id not in self.devices:
                self.start_device(device_id)

    def start_device(
        self, device_id: str, crash_points: dict[str, str] | None = None
    ) -> SimulatedDevice:
        """Start one device; `crash_points` arms a one-shot crash of a core at a named point of
        its next swap (firmware.faults.CRASH_POINTS), like a power cut at that instruction."""
        identity = self._identity(device_id)
        crash_points = crash_points or {}
        access = self.access()
        behaviour = self.behaviour_of(device_id)
        bad = frozenset({self.options.bad_model_version or ""})
        relay = self._relays.get(device_id)
        cuts = behaviour["download_cut_after"] is not None or behaviour["first_sleep_s"] is not None
        if relay is None and (self.options.relay_all or cuts):
            relay = self._relays[device_id] = Relay(self._loop)
        mqtt_port = (
            access.mqtt_port
            if relay is None
            else self._run(relay.port_for("127.0.0.1", access.mqtt_port))
        )
        device = _FleetDevice(
            device_id=device_id,
            hardware_id=self.options.hardware_id,
            profile=self.options.profile,
            state_dir=self.data_dir / device_segment(device_id),
            image_root=self._roots[0],
            director_root=self._roots[1],
            connection=ConnectionString.parse(identity.connection_string),
            hub_options=HubOptions(
                ca_file=access.ca_cert,
                port=mqtt_port,
                backoff_max_s=self.options.backoff_max_s,
            ),
            cores={
                core: CoreSpec(
                    inference_period_s=self.options.inference_period_s,
                    heartbeat_period_s=self.options.heartbeat_period_s,
                    seed=seed,
                    crash_point=crash_points.get(core),
                    crash_after_inferences=(
                        self.options.crash_after_inferences if behaviour["crashes"] else None
                    ),
                    crash_models=bad if behaviour["crashes"] else None,
                    selftest_fail_models=bad if behaviour["fails_selftest"] else frozenset(),
                )
                for core, seed in zip(("m4-0", "m4-1"), identity.seeds, strict=True)
            },
            health_interval_s=self.options.health_interval_s,
            restart_cores=self.options.reboot_dead_cores,
            core_mode=cast(CoreMode, self.options.core_mode),
            agent_poll_s=self.options.agent_poll_s,
            agent_options={
                "summary_interval_s": self.options.summary_interval_s,
                "raw_sample_rate": self.options.raw_sample_rate,
                "telemetry_flush_s": self.options.telemetry_flush_s,
                "liveness_report_s": self.options.liveness_report_s,
            },
            clock_skew_s=behaviour["clock_skew_s"],
        )
        if relay is not None:
            device.route = lambda url: self._route(relay, url)
            self._arm_behaviour(device_id, relay)
        device.start()
        self.devices[device_id] = device
        return device

    @property
    def roots(self) -> tuple[bytes, bytes]:
        """The image and director repositories' root metadata every device trusts."""
        return self._roots

    def access(self) -> HubAccess:
        if isinstance(self.hub, HubAccess):
            return self.hub
        server = self.hub.server
        assert server.ca_cert is not None, "the hub must be running"
        return HubAccess(Path(server.ca_cert), server.mqtt_port)

    def behaviour_of(self, device_id: str) -> dict[str, Any]:
        """What the seeded behaviour does to this device: its download cut (bytes into the
        response) and its sleep cycle's first sleep, each None when it has none; its clock
        skew; whether its cores fail the bad model's self-test, and whether they crash on it."""
        o = self.options
        rng = random.Random(f"behaviour/{o.behaviour_seed}/{device_id}")
        # Models are a few KiB: cut inside the first 2 KiB of the answer (headers included).
        cut = rng.randint(256, 2_048) if rng.random() < o.download_cut_share else None
        sleepy = rng.random() < o.sleepy_share
        first = rng.uniform(0, o.awake_s) if sleepy else None
        skewed = rng.random() < o.clock_skew_share
        skew = rng.uniform(-o.clock_skew_max_s, o.clock_skew_max_s) if skewed else 0.0
        # Later draws come after these, so that a seed keeps picking the same devices for them.
        fails_selftest = rng.random() < o.selftest_fail_share
        crashes = rng.random() < o.crash_share
        return {
            "download_cut_after": cut,
            "first_sleep_s": first,
            "clock_skew_s": skew,
            "fails_selftest": fails_selftest,
            "crashes": crashes,
        }

    def _arm_behaviour(self, device_id: str, relay: Relay) -> None:
        behaviour = self.behaviour_of(device_id)
        if behaviour["download_cut_after"] is not None and relay.trips == 0:
            relay.restore_after_s = self.options.download_cut_s
            self._on_loop(setattr, relay, "trip", (b"/targets/", behaviour["download_cut_after"]))
        first = behaviour["first_sleep_s"]
        if first is not None and device_id not in self._sleepers:
            o = self.options
            self._sleepers[device_id] = asyncio.run_coroutine_threadsafe(
                relay.duty_cycle(o.awake_s, o.asleep_s, first), self._loop
            )

    @property
    def download_cuts(self) -> int:
        """Download cuts the behaviour made so far (each device at most once)."""
        return sum(relay.trips for relay in self._relays.values())

    def _route(self, relay: Relay, url: str) -> str:
        parts = urlsplit(url)
        if parts.hostname not in _LOOPBACK or parts.port is None:
            return url  # a remote service (Azure): no relay, no cut
        port = self._run(relay.port_for(parts.hostname, parts.port))
        return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))

    def stop_device(self, device_id: str) -> None:
        device = self.devices.pop(device_id, None)
        if device is not None:
            device.stop()
            self._reboots_of_stopped += device.revived_cores

    @property
    def core_reboots(self) -> int:
        """Core processes booted again after they exited (the agents restart them)."""
        return self._reboots_of_stopped + sum(d.revived_cores for d in self.devices.values())

    def stop(self) -> None:
        for device_id in list(self.devices):
            self.stop_device(device_id)
        for sleeper in self._sleepers.values():
            sleeper.cancel()
        self._sleepers.clear()
        if self._thread.is_alive():
            for relay in self._relays.values():
                self._run(relay.close())
            self._relays.clear()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------------

    def disconnect(self, device_id: str) -> None:
        """Cut the device's network: open connections drop, new ones are refused."""
        self._on_loop(self._relay(device_id).set_cut, True)

    def reconnect(self, device_id: str) -> None:
        self._on_loop(self._relay(device_id).set_cut, False)

    def cut_during_download(self, device_id: str, marker: bytes, after_bytes: int) -> None:
        """Cut the device's network once `after_bytes` of the response to its next request whose
        bytes contain `marker` (e.g. b"/targets/") have arrived; `reconnect` restores it."""
        relay = self._relay(device_id)
        self._on_loop(setattr, relay, "trip", (marker, after_bytes))

    def _relay(self, device_id: str) -> Relay:
        self._identity(device_id)
        relay = self._relays.get(device_id)
        if relay is None:
            raise FleetError(f"device {device_id!r} has no relay to cut (relay_all is off)")
        return relay

    def is_cut(self, device_id: str) -> bool:
        relay = self._relays.get(device_id)
        return relay is not None and relay.cut

    def kill_core(self, device_id: str, core: str) -> int:
        """A power cut of one core process (SIGKILL); the agent finds out on its next message."""
        device = self.devices.get(device_id)
        if device is None:
            raise FleetError(f"device {device_id!r} is not running")
        if core not in device.processes:
            raise FleetError(f"device {device_id!r} has no core {core!r}")
        return device.kill_core(core)

    def core_pids(self, device_id: str) -> dict[str, int]:
        device = self.devices[device_id]
        return device.core_boot_ids()
