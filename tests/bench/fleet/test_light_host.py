"""What one simulated device costs while idle, with its cores as processes and hosted in process.

N devices (agent, paho-mqtt session over TLS to the mock hub in its own process, two cores that
boot a confirmed model each from copied slot files) sit idle for a window: no update, no
inference, heartbeats only. Measured over the window for the benchmark's process and its core
processes together: CPU seconds, context switches (every thread wake-up is one) and PSS, each
per device, against process mode at the smallest N, printed as ratios. Two extra in-process rows
show where the remaining cost lives: the client pump polling every 20 ms as it did before
(a transport without a listener), and the agent's loop woken once a second instead of ten times.

A second measurement: memory per hosted core with the reactor's shared interpreters against a
TFLM interpreter of its own per core, each in a fresh process.

Small by default (a few devices, short windows); TINYFLEET_BENCH_FULL=1 runs N = 20 in process
mode and N = 50, 200, 500 in process.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from device_agent.hub_client import HubOptions
from device_agent.hub_dialect import ConnectionString
from device_agent.intercore import CoreClient, CoreProcess, HostPhase, datagram_pipe
from firmware.host import CoreBoot, CoreReactor
from firmware.icc import MT3620
from infra.simdevice import CoreSpec, InProcessCore, SimulatedDevice
from tests.bench.conftest import FULL
from tests.bench.hub.conftest import KEY, Server, pki, provision_bulk, start_hub  # noqa: F401
from tests.unit.firmware.conftest import IMAGES, prebuilt, target_for

PROCESS_N = 20 if FULL else 3
INPROCESS_N = (50, 200, 500) if FULL else (3, 12)
WINDOW_S = 10.0 if FULL else 3.0
MODELS = {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v1.0.0"}


@dataclass(frozen=True)
class Sample:
    cpu_s: float
    switches: int
    pss_kib: int


def _sample(pids: list[int]) -> Sample:
    cpu, switches, pss = 0.0, 0, 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                status = (task / "status").read_text()
                cpu += int((task / "schedstat").read_text().split()[0]) / 1e9
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
            switches += sum(
                int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
            )
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
    return Sample(cpu, switches, pss)


def _template(root: Path) -> Path:
    """Slot files of two cores that each confirmed a model, installed through the protocol."""
    state = root / "template" / "cores"
    with CoreReactor() as reactor:
        for core, stem in MODELS.items():
            transport, port = datagram_pipe()
            reactor.boot(CoreBoot(core, state, IMAGES / "m4-1.0.0.json", "mt3620"), port)
            client = CoreClient(transport, MT3620)
            client.connect()
            blob, meta = prebuilt(stem)
            slot = client.stage(target_for(blob, meta), [blob])
            client.activate(slot)
            client.confirm(slot)
            client.close()
    return state


class _Polled:
    """A transport without a listener: the client's pump polls it every 20 ms, as before."""

    def __init__(self, inner: Any) -> None:
        self.send, self.recv, self.close = inner.send, inner.recv, inner.close


class _PolledDevice(SimulatedDevice):
    def _host_core(self, core: str, spec: CoreSpec, state: Path) -> CoreClient:
        super()._host_core(core, spec, state)
        running = self.processes[core]
        assert isinstance(running, InProcessCore)
        return CoreClient(_Polled(running.transport), self.profile)


@dataclass
class Row:
    label: str
    n: int
    cpu_pct: float  # of one CPU, per device
    wakeups_s: float  # per device
    pss_kib: float  # per device


def _measure(label: str, n: int, root: Path, hub: Server, template: Path, **options: Any) -> Row:
    """One row, in a fresh process (so that its memory has a clean baseline)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    args = (label, n, root, hub.port, hub.ca_cert, template, options, out)
    child = context.Process(target=_measure_child, args=args)
    child.start()
    deadline = time.monotonic() + 600 + 2 * n
    while True:
        try:
            row: Row = out.get(timeout=5)
            break
        except queue.Empty:
            assert child.is_alive(), f"{label}: the measuring process died ({child.exitcode})"
            assert time.monotonic() < deadline, f"{label}: no result in time"
    child.join(60)
    print(f"\n  measured {row}", flush=True)
    return row


def _measure_child(
    label: str, n: int, root: Path, port: int, ca: str, template: Path, options: Any, out: Any
) -> None:
    out.put(_measure_here(label, n, root, port, ca, template, **options))


def _measure_here(
    label: str, n: int, root: Path, port: int, ca: str, template: Path, **options: Any
) -> Row:
    polled = options.pop("polled", False)
    factory = _PolledDevice if polled else SimulatedDevice
    reactor = CoreReactor() if options.get("core_mode") == "inprocess" else None
    before = _sample([os.getpid()])
    devices: list[SimulatedDevice] = []
    try:
        for i in range(n):
            device_id = f"bench{i:05d}"
            state = root / label / device_id
            shutil.copytree(template, state / "cores")
            device = factory(
                device_id=device_id,
                hardware_id="mt3620",
                profile="mt3620",
                state_dir=state,
                image_root=b"{}",
                director_root=b"{}",
                connection=ConnectionString.parse(
                    f"HostName=tinyfleet-hub.local;DeviceId={device_id};"
                    f"SharedAccessKey={KEY};GatewayHostName=localhost"
                ),
                hub_options=HubOptions(ca_file=Path(ca), port=port),
                cores={c: CoreSpec(inference_period_s=0.0, seed=i) for c in MODELS},
                reactor=reactor,
                **options,
            )
            device.start()
            devices.append(device)
        deadline = time.monotonic() + 120 + n
        while not all(_ready(d) for d in devices):
            assert time.monotonic() < deadline, f"{label}: devices did not come up"
            time.sleep(0.2)
        pids = [os.getpid(), *(p for d in devices for p in _core_pids(d))]
        start, t0 = _sample(pids), time.monotonic()
        time.sleep(WINDOW_S)
        end, elapsed = _sample(pids), time.monotonic() - t0
    finally:
        for device in devices:
            device.stop()
        if reactor is not None:
            reactor.close()
    return Row(
        label,
        n,
        100 * (end.cpu_s - start.cpu_s) / elapsed / n,
        (end.switches - start.switches) / elapsed / n,
        (end.pss_kib - before.pss_kib) / n,
    )


def _ready(device: SimulatedDevice) -> bool:
    hub = device.hub_client
    return (
        hub is not None
        and hub.connected.is_set()
        and all(c.phase is not HostPhase.DISCONNECTED for c in device.agent.cores.values())
    )


def _core_pids(device: SimulatedDevice) -> list[int]:
    return [p.pid for p in device.processes.values() if isinstance(p, CoreProcess)]


@pytest.fixture
def hub(tmp_path: Path, pki: tuple[Path, Path, Path]) -> Iterator[Server]:  # noqa: F811
    provision_bulk(tmp_path / "hub", max(PROCESS_N, *INPROCESS_N))
    server = start_hub(tmp_path / "hub", pki)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(3600 if FULL else 300)
def test_idle_cost_per_device_in_process_and_as_processes(tmp_path: Path, hub: Server) -> None:
    template = _template(tmp_path)
    rows = [_measure("process", PROCESS_N, tmp_path, hub, template, core_mode="process")]
    small = INPROCESS_N[0]
    rows.append(
        _measure(
            "inproc-polled", small, tmp_path, hub, template, core_mode="inprocess", polled=True
        )
    )
    rows += [
        _measure(f"inproc-{n}", n, tmp_path, hub, template, core_mode="inprocess")
        for n in INPROCESS_N
    ]
    rows.append(
        _measure(
            "inproc-agent1s",
            small,
            tmp_path,
            hub,
            template,
            core_mode="inprocess",
            agent_poll_s=1.0,
        )
    )
    base = rows[0]

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else float("inf")

    print(f"\nidle devices over {WINDOW_S:g} s windows (per device; ratio = process / this row)")
    print(
        f"{'mode':>15} {'N':>5} {'CPU %':>7} {'x':>6} {'wakes/s':>8} {'x':>6}"
        f" {'PSS MiB':>8} {'x':>6}"
    )
    for row in rows:
        cpu_x = ratio(base.cpu_pct, row.cpu_pct)
        print(
            f"{row.label:>15} {row.n:>5} {row.cpu_pct:>7.3f} {cpu_x:>6.1f}"
            f" {row.wakeups_s:>8.1f} {ratio(base.wakeups_s, row.wakeups_s):>6.1f}"
            f" {row.pss_kib / 1024:>8.2f} {ratio(base.pss_kib, row.pss_kib):>6.1f}"
        )
    assert all(row.pss_kib > 0 for row in rows)


def _cores_rss(count: int, shared: bool, state: str, out: Any) -> None:
    """In a fresh process: RSS growth per core for `count` cores booting the same model."""
    import hashlib as _hashlib  # noqa: F401  (warm imports before the baseline)

    from firmware._core import CoreConfig, CoreMachine
    from firmware._image import FirmwareImage
    from firmware._runtime import InterpreterCache
    from firmware._slots import SlotStore

    def rss_kib() -> int:
        return (
            int(Path("/proc/self/statm").read_text().split()[1])
            * os.sysconf("SC_PAGE_SIZE")
            // 1024
        )

    image = FirmwareImage.load(IMAGES / "m4-1.0.0.json")
    config = CoreConfig("m4-0", MT3620, image, inference_period_s=0.0)
    cache = InterpreterCache() if shared else None
    stores = []
    for i in range(count):  # copies of one core's slots, read before the baseline
        target = Path(state) / f"c{i}"
        shutil.copytree(Path(state) / "m4-0", target / "m4-0")
        stores.append(SlotStore(target / "m4-0"))
    CoreMachine(config, stores[0], 0.0, interpreters=InterpreterCache())  # warm the runtime
    base = rss_kib()
    keep = [CoreMachine(config, s, 0.0, interpreters=cache) for s in stores]
    out.put((rss_kib() - base) / count)
    del keep


def test_memory_per_core_with_shared_interpreters(tmp_path: Path) -> None:
    template = _template(tmp_path)
    count = 1000 if FULL else 200
    context = multiprocessing.get_context("spawn")
    per_core = {}
    for shared in (False, True):
        state = tmp_path / ("shared" if shared else "own")
        shutil.copytree(template, state)
        out = context.Queue()
        child = context.Process(target=_cores_rss, args=(count, shared, str(state), out))
        child.start()
        per_core[shared] = out.get(timeout=300)
        child.join(60)
    print(
        f"\n{count} hosted cores running kws v1: {per_core[False]:.1f} KiB per core with an "
        f"interpreter each, {per_core[True]:.1f} KiB shared "
        f"(ratio {per_core[False] / max(per_core[True], 0.1):.1f})"
    )
    assert per_core[False] > per_core[True]
