"""A fleet host: one process running its share of a simulated fleet (`python -m infra.fleet_host`).

A fleet of thousands of devices is split across a few host processes so the devices' agents,
TLS sessions and cores are not all behind one interpreter lock. The process that runs the hub
provisions every device first (`Fleet` with groups, in its own process); each host is then
started on the same fleet folder with its slice, `i/K` (`infra.fleet.host_slice`). A host:

- starts its devices (each with its own hub session, agent state and cores, as in one process);
- writes one JSON status line to stdout when its devices are started, then every
  `--report-s` seconds: `{"host", "devices", "connected", "rss_bytes", "cpu_s",
  "core_reboots"}` (RSS and CPU include the core processes of devices that run them);
- stops its devices in order and exits 0 on SIGTERM, SIGINT or EOF on stdin.

`spawn_hosts` starts K of them from the hub's process and waits for their first line;
`FleetHosts.stop` stops them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from device_agent.intercore import CoreProcess
from infra.fleet import Fleet, FleetError, FleetOptions, HubAccess

__all__ = ["FleetHosts", "main", "spawn_hosts"]


def _parse_slice(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"slice {text!r} is not I/K, e.g. 0/2")
    return int(index), int(count)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infra.fleet_host", description=__doc__)
    p.add_argument("--data", required=True, type=Path, help="the fleet folder (provisioned)")
    p.add_argument("--ca", required=True, type=Path, help="the hub's CA certificate")
    p.add_argument("--mqtt-port", required=True, type=int)
    p.add_argument("--image-root", required=True, type=Path, help="image repository root.json")
    p.add_argument("--director-root", required=True, type=Path, help="director root.json")
    p.add_argument("--slice", required=True, type=_parse_slice, help="I/K: this host's share")
    p.add_argument("--options", default="{}", help="FleetOptions as a JSON object")
    p.add_argument("--report-s", type=float, default=5.0)
    return p


def _status(index: int, fleet: Fleet) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # core processes that ended
    cores = [  # core processes (process mode); in-process cores are in this process's figures
        p.pid
        for device in fleet.devices.values()
        for p in device.processes.values()
        if isinstance(p, CoreProcess)
    ]
    connected = sum(
        1
        for device in fleet.devices.values()
        if device.hub_client is not None and device.hub_client.connected.is_set()
    )
    cpu = usage.ru_utime + usage.ru_stime + reaped.ru_utime + reaped.ru_stime
    return {
        "host": index,
        "devices": len(fleet.devices),
        "connected": connected,
        "rss_bytes": _rss_bytes() + sum(_rss_bytes(pid) for pid in cores),
        "cpu_s": round(cpu + sum(_cpu_s(pid) for pid in cores), 3),
        "core_reboots": fleet.core_reboots,
    }


def _cpu_s(pid: int) -> float:
    """A live process's user + system CPU seconds, from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int | str = "self") -> int:
    """A process's resident set now (not its peak), from /proc; 0 once it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    index, count = args.slice
    try:
        options = FleetOptions(**json.loads(args.options))
        fleet = Fleet(
            HubAccess(args.ca, args.mqtt_port),
            args.data,
            image_root=args.image_root.read_bytes(),
            director_root=args.director_root.read_bytes(),
            options=options,
            share=(index, count),
        )
    except (FleetError, OSError, TypeError, ValueError) as exc:
        print(f"infra.fleet_host: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    threading.Thread(target=_watch_stdin, args=(done,), daemon=True).start()
    fleet.start()
    try:
        while True:
            print(json.dumps(_status(index, fleet)), flush=True)
            if done.wait(args.report_s):
                break
    finally:
        fleet.stop()
    return 0


def _watch_stdin(done: threading.Event) -> None:
    """EOF on stdin (the parent went away) stops the host like SIGTERM."""
    stream = sys.stdin.buffer
    while not done.is_set():
        try:
            readable, _, _ = select.select([stream], [], [], 1.0)
            if readable and not stream.read1(4096):
                done.set()
        except (OSError, ValueError):
            done.set()


class FleetHosts:
    """Host processes started by `spawn_hosts`, with their latest status lines."""

    def __init__(self, processes: list[subprocess.Popen[bytes]]) -> None:
        self.processes = processes
        self.latest: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(i, p.stdout), daemon=True)
            for i, p in enumerate(processes)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, index: int, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                status = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.latest[index] = status

    def status(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return {i: dict(s) for i, s in self.latest.items()}

    def wait_started(self, timeout_s: float) -> None:
        """Until every host said its devices are started; a host that exits first fails."""
        deadline = time.monotonic() + timeout_s
        while len(self.status()) < len(self.processes):
            for i, process in enumerate(self.processes):
                if process.poll() is not None and i not in self.status():
                    raise FleetError(f"fleet host {i} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise FleetError(f"fleet hosts did not start within {timeout_s:g} s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 120.0) -> list[int]:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=timeout_s))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
            if process.stdin is not None:
                process.stdin.close()
        return codes


def spawn_hosts(
    fleet: Fleet, count: int, *, report_s: float = 5.0, start_timeout_s: float = 600.0
) -> FleetHosts:
    """Start `count` hosts on `fleet`'s (provisioned) folder, split by `host_slice`."""
    access = fleet.access()
    roots = fleet.data_dir / "roots"
    roots.mkdir(exist_ok=True)
    (roots / "image.json").write_bytes(fleet.roots[0])
    (roots / "director.json").write_bytes(fleet.roots[1])
    options = json.dumps(dataclasses.asdict(fleet.options))
    argv = [
        sys.executable, "-m", "infra.fleet_host",
        "--data", str(fleet.data_dir), "--ca", str(access.ca_cert),
        "--mqtt-port", str(access.mqtt_port),
        "--image-root", str(roots / "image.json"),
        "--director-root", str(roots / "director.json"),
        "--options", options, "--report-s", str(report_s),
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            [*argv, "--slice", f"{index}/{count}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for index in range(count)
    ]
    hosts = FleetHosts(processes)
    try:
        hosts.wait_started(start_timeout_s)
    except BaseException:
        hosts.stop()
        raise
    return hosts


if __name__ == "__main__":
    sys.exit(main())
