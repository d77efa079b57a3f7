"""A simulated device: the agent, its IoT Hub session and two simulated M4 cores.

The composition root that `tinyfleet agent run`, the fleet simulator and the tests share. The
agent speaks MQTT over TLS to the hub; repository metadata and targets come over HTTP(S) (or
from a store, for in-process simulations). The cores run in one of two modes:

 * `core_mode="process"` (the default): each core is a separate OS process
   (`python -m firmware.core`) speaking the inter-core protocol over a SOCK_SEQPACKET socket
   pair; a power cut is a real SIGKILL.
 * `core_mode="inprocess"`: each core is a `CoreMachine` on a `firmware.host.CoreReactor` (one
   thread for every device of the process) behind an in-process datagram pipe; a power cut
   drops the machine where it stands and closes its link. The slot files, the protocol and the
   agent are the same, so both modes boot, swap, revert and report alike.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tuf.ngclient import FetcherInterface, Urllib3Fetcher

from device_agent.agent import Agent, AgentConfig, HubPort
from device_agent.hub_client import HubClient, HubOptions
from device_agent.hub_dialect import ConnectionString
from device_agent.intercore import (
    CoreClient,
    CoreProcess,
    CoreTransport,
    DatagramTransport,
    datagram_pipe,
)
from device_agent.protocol import DesiredService
from device_agent.target_source import HttpTargetSource, StoreTargetSource, TargetSource
from firmware import core as firmware_core
from firmware.host import CoreBoot, CoreReactor, HostedCore, shared_reactor
from firmware.icc import profile_named
from signing.files import atomic_write
from signing.store import RepositoryStore, StoreFetcher

__all__ = [
    "CoreMode",
    "CoreSpec",
    "InProcessCore",
    "QueryFetcher",
    "SimulatedDevice",
    "default_firmware",
]

CoreMode = Literal["process", "inprocess"]
CORE_MODES: tuple[CoreMode, ...] = ("process", "inprocess")

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware" / "images"


def default_firmware() -> Path:
    return FIRMWARE_DIR / "m4-1.0.0.json"


class QueryFetcher(Urllib3Fetcher):
    """python-tuf's HTTP fetcher with a query string (e.g. an Azure Blob SAS token) appended."""

    def __init__(self, query: str) -> None:
        super().__init__()
        self._query = f"?{query}" if query else ""

    def _fetch(self, url: str) -> Iterator[bytes]:
        return super()._fetch(url + self._query)


@dataclass
class CoreSpec:
    firmware: Path = field(default_factory=default_firmware)
    inference_period_s: float = 0.5
    heartbeat_period_s: float = 5.0
    seed: int = 0
    crash_point: str | None = None
    crash_after_inferences: int | None = None  # a crashing model: every boot dies after N
    crash_models: frozenset[str] | None = None  # the versions that crash (None: any model)
    selftest_fail_models: frozenset[str] = frozenset()  # versions whose self-test fails here


class RunningCore(Protocol):
    """What the device keeps of one running core, in either mode (`CoreProcess` or
    `InProcessCore`)."""

    @property
    def transport(self) -> CoreTransport: ...

    @property
    def alive(self) -> bool: ...

    def exit_status(self, timeout: float = 0.0) -> int | None: ...

    def kill(self) -> int: ...

    def stop(self, timeout: float = 5.0) -> int: ...


class InProcessCore:
    """A core booted on a reactor and the agent's end of its pipe: a `CoreProcess` look-alike."""

    def __init__(self, hosted: HostedCore, transport: DatagramTransport) -> None:
        self.hosted = hosted
        self.transport = transport

    @property
    def alive(self) -> bool:
        return self.hosted.alive

    @property
    def boot_id(self) -> int:
        return self.hosted.boot_id

    def exit_status(self, timeout: float = 0.0) -> int | None:
        return self.hosted.exit_status(timeout)

    def kill(self) -> int:
        """A power cut: the core is dropped where it stands; its slot files stay on disk."""
        code = self.hosted.kill()
        self.transport.close()
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """Close the link (the core ends on EOF); power it off if it lingers."""
        self.transport.close()
        code = self.hosted.exit_status(timeout)
        return self.hosted.kill() if code is None else code


def _boot_id(running: RunningCore) -> int:
    if isinstance(running, CoreProcess):
        return running.pid
    assert isinstance(running, InProcessCore)
    return running.boot_id


class SimulatedDevice:
    def __init__(
        self,
        *,
        device_id: str,
        hardware_id: str,
        profile: str,
        state_dir: Path,
        image_root: bytes,
        director_root: bytes,
        hub: HubPort | None = None,
        connection: ConnectionString | None = None,
        hub_options: HubOptions | None = None,
        store: RepositoryStore | None = None,
        cores: dict[str, CoreSpec] | None = None,
        health_interval_s: float = 30.0,
        restart_cores: bool = True,
        core_mode: CoreMode = "process",
        reactor: CoreReactor | None = None,
        agent_poll_s: float | None = None,
        agent_options: Mapping[str, Any] | None = None,
        clock_skew_s: float = 0.0,
    ) -> None:
        """`reactor` serves the cores in `inprocess` mode (default: the process's shared one);
        `agent_poll_s` overrides how often the agent's loop wakes when nothing arrives;
        `agent_options` sets other `AgentConfig` fields (e.g. `summary_interval_s`);
        `clock_skew_s` runs the agent's wall clock that far off the machine's (a device whose
        RTC drifted: its telemetry times and its intervals are off by as much)."""
        if core_mode not in CORE_MODES:
            raise ValueError(f"core_mode must be one of {', '.join(CORE_MODES)}, not {core_mode!r}")
        self.core_mode = core_mode
        self._reactor = reactor
        self.profile = profile_named(profile)
        self.state_dir = state_dir
        self.specs = cores or {
            core: CoreSpec(seed=i) for i, core in enumerate(self.profile.core_ids)
        }
        self.processes: dict[str, RunningCore] = {}
        self.revived_cores = 0  # restarts of a core whose process had exited (a power cut)
        for core, spec in self.specs.items():  # the image each core was last switched to
            choice = self._firmware_choice(core)
            if choice.exists():
                spec.firmware = Path(choice.read_text())
        clients = {core: self._start_core(core) for core in self.specs}
        allowed = {"model", "firmware"} if self.profile.firmware_updates_allowed else {"model"}
        config = AgentConfig(
            device_id=device_id,
            hardware_id=hardware_id,
            profile=profile,
            allowed_kinds=frozenset(allowed),
            state_dir=state_dir / "agent",
            image_root=image_root,
            director_root=director_root,
            health_interval_s=health_interval_s,
            restart_cores=restart_cores,
        )
        if agent_poll_s is not None:
            config = dataclasses.replace(config, poll_interval_s=agent_poll_s)
        if agent_options:
            config = dataclasses.replace(config, **agent_options)
        self._store = store
        self.hub_client: HubClient | None = None
        if hub is None:
            if connection is None or hub_options is None:
                raise ValueError("give either a hub port or a connection string and options")
            self.hub_client = HubClient(
                connection,
                hub_options,
                on_desired=self._desired,
                on_method=self._method,
                on_connected=self._connected,
            )
            hub = self.hub_client
        self.agent = Agent(
            config,
            hub,
            clients,
            fetcher_for=self._fetcher,
            source_for=self._source,
            host=self,
            clock=(lambda: time.time() + clock_skew_s) if clock_skew_s else time.time,
        )
        self._thread: threading.Thread | None = None

    # the hub client is built before the agent; these forward once the agent exists
    def _desired(self, document: dict[str, object]) -> None:
        self.agent.on_desired(document)

    def _method(self, name: str, payload: bytes) -> tuple[int, bytes]:
        return self.agent.on_method(name, payload)

    def _connected(self) -> None:
        self.agent.on_connected()

    def _start_core(self, core: str) -> CoreClient:
        spec = self.specs[core]
        state = self.state_dir / "cores"
        state.mkdir(parents=True, exist_ok=True)
        if self.core_mode == "inprocess":
            return self._host_core(core, spec, state)
        process = CoreProcess.spawn(
            lambda fd: firmware_core.command_line(
                core_id=core,
                state_dir=state,
                firmware=spec.firmware,
                fd=fd,
                profile=self.profile.name,
                inference_period_s=spec.inference_period_s,
                heartbeat_period_s=spec.heartbeat_period_s,
                seed=spec.seed,
                crash_point=spec.crash_point,
                crash_after_inferences=spec.crash_after_inferences,
                crash_models=spec.crash_models,
                selftest_fail_models=spec.selftest_fail_models,
            ),
            max_message_bytes=self.profile.max_message_bytes,
        )
        self.processes[core] = process
        return CoreClient(process.transport, self.profile)

    def _host_core(self, core: str, spec: CoreSpec, state: Path) -> CoreClient:
        reactor = self._reactor or shared_reactor()
        transport, port = datagram_pipe()
        boot = CoreBoot(
            core_id=core,
            state_dir=state,
            firmware=spec.firmware,
            profile=self.profile.name,
            inference_period_s=spec.inference_period_s,
            heartbeat_period_s=spec.heartbeat_period_s,
            seed=spec.seed,
            crash_point=spec.crash_point,
            crash_after_inferences=spec.crash_after_inferences,
            crash_models=spec.crash_models,
            selftest_fail_models=spec.selftest_fail_models,
        )
        self.processes[core] = InProcessCore(reactor.boot(boot, port), transport)
        return CoreClient(transport, self.profile)

    def core_boot_ids(self) -> dict[str, int]:
        """core -> an id of its current boot (the pid in process mode): changes on a restart."""
        return {core: _boot_id(running) for core, running in self.processes.items()}

    def restart_core(self, core: str, firmware: Path | None = None) -> CoreClient:
        """Power-cycle one core, booting `firmware` from now on if given (kept across runs)."""
        old = self.processes.get(core)
        if old is not None:
            if not old.alive:
                self.revived_cores += 1
            old.stop()
        if firmware is not None:
            self.specs[core].firmware = firmware
            atomic_write(self._firmware_choice(core), str(firmware).encode())
        return self._start_core(core)

    def firmware_path(self, core: str) -> Path:
        return self.specs[core].firmware

    def exit_status(self, core: str) -> int | None:
        """How the core's process ended; a link lost while the process still runs (it stopped
        answering) gets a short grace to exit, then None."""
        process = self.processes.get(core)
        return None if process is None else process.exit_status(timeout=0.5)

    def _firmware_choice(self, core: str) -> Path:
        return self.state_dir / "cores" / f"{core}.firmware"

    def _fetcher(self, desired: DesiredService) -> FetcherInterface:
        if desired.image_url and desired.image_url.startswith("store:") and self._store:
            return StoreFetcher(self._store)
        return QueryFetcher(desired.url_query)

    def _source(self, desired: DesiredService) -> TargetSource:
        assert desired.targets_url is not None
        if desired.targets_url.startswith("store:") and self._store:
            return StoreTargetSource(self._store, desired.targets_url.removeprefix("store:///"))
        return HttpTargetSource(desired.targets_url, desired.url_query)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.agent.run, name="agent", daemon=True)
        self._thread.start()
        if self.hub_client is not None:
            self.hub_client.start()

    def stop(self) -> None:
        """Stop the agent, then close every core link first (each core sees EOF and exits
        quietly), then the hub session. A core whose host stops acknowledging without EOF would
        wait out its retransmissions and exit with a warning instead."""
        self.agent.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.agent.close_cores()
        for process in self.processes.values():
            process.stop()
        if self.hub_client is not None:
            self.hub_client.stop()

    def kill_core(self, core: str) -> int:
        """A power cut of one core: SIGKILL of its process, or, in process, the core dropped
        mid-state; either way -SIGKILL, and the agent finds out from its link."""
        return self.processes[core].kill()
