"""Simulated agents for the crash loop: one MQTT 3.1.1/TLS connection per device to the mock hub.

Each device reads its desired twin (one `$iothub/twin/GET`, then the desired-patch
notifications) and writes its reported `tinyfleet.agent` state like the real agent does:
`deploying` through the steps check, verify, stage, activate, then `idle` on the new release.
An installed device keeps re-reporting (a heartbeat) so that the hub's `lastActivityTime`, which
the engine reads as the report time, moves past the soak. `bad` devices reject the release.

Everything runs on one asyncio loop in a thread of the test process, with the hub's own codec on
the client side (as `tests/bench/hub/loadgen.py`), so 500 devices cost 500 sockets, not threads.

What the fleet records for the invariants: every desired workflow each device saw, in order
(`history`), the devices whose "release active" report the hub acknowledged (`acked`), and, when
an offer arrives, whether the director log already held the device's assignment (`unsigned`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import ssl
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from device_agent.protocol import COMPONENT
from infra.hub import _codec as mqtt
from infra.hub import make_sas_token

DEPLOY, CANCEL = 3, 255
STEPS = ("check", "verify", "stage", "activate")
OLD_RELEASE = "rel-0"


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch, as the hub applies desired patches."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def workflow_of(desired: dict[str, Any]) -> tuple[str | None, int | None]:
    service = (desired.get(COMPONENT) or {}).get("service") or {}
    workflow = service.get("workflow") or {}
    wid, action = workflow.get("id"), workflow.get("action")
    return (wid if isinstance(wid, str) else None, action if isinstance(action, int) else None)


def _agent(state: str, wid: str | None, installed: str, step: str, reason: str) -> dict[str, Any]:
    return {
        COMPONENT: {
            "__t": "c",
            "agent": {
                "state": state,
                "workflow": {"id": wid} if wid else None,
                "installedReleaseId": installed,
                "lastResult": {"step": step, "reason": reason},
                # The core is alive: a heartbeat now (the device's clock) and a result since.
                "cores": {
                    "m4-0": {
                        "state": "running",
                        "heartbeatAtMs": int(time.time() * 1000),
                        "inferences": 1,
                    }
                },
            },
        }
    }


class DirectorLog:
    """Reads the director port's append-only log (`assign <device> <release>` lines) as it grows."""

    def __init__(self, path: Any) -> None:
        self._path = path
        self._offset = 0
        self.assigned: dict[str, set[str]] = {}

    def refresh(self) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line cut by SIGKILL is read once it is whole
        for line in data[:end].decode().splitlines():
            op, device, *rest = line.split()
            if op == "assign":
                self.assigned.setdefault(device, set()).add(rest[0])
        self._offset += end


@dataclass
class _Device:
    device_id: str
    bad: bool
    desired: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    workflow: str | None = None
    installed: str = OLD_RELEASE
    last_report: float = 0.0
    rid: int = 0
    ack_rids: dict[str, str] = field(default_factory=dict)  # rid -> release reported active


@dataclass
class Fleet:
    host: str
    port: int
    hostname: str
    ca_cert: str
    key: str
    ids: list[str]
    bad: set[str]
    director_log: DirectorLog
    period_s: float = 0.25  # one agent step per period
    heartbeat_s: float = 0.8
    history: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    acked: set[tuple[str, str]] = field(default_factory=set)  # (device, release) reported active
    unsigned: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleet", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []

    # -- lifecycle (called from the test thread) -------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        self._thread.start()
        self._run(self._connect_all(), timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._run(self._close_all(), 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def snapshot(
        self,
    ) -> tuple[dict[str, list[tuple[str, int]]], set[tuple[str, str]], list[tuple[str, str]]]:
        with self.lock:
            history = {d: list(h) for d, h in self.history.items()}
            return history, set(self.acked), list(self.unsigned)

    def _run(self, coro: Any, timeout: float) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    # -- the devices ----------------------------------------------------------------------------

    async def _connect_all(self) -> None:
        context = ssl.create_default_context(cafile=self.ca_cert)
        gate = asyncio.Semaphore(50)
        ready: list[asyncio.Future[None]] = []
        for device_id in self.ids:
            started: asyncio.Future[None] = self._loop.create_future()
            ready.append(started)
            device = _Device(device_id, device_id in self.bad)
            self._tasks.append(asyncio.create_task(self._device(device, context, gate, started)))
        await asyncio.gather(*ready)

    async def _close_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()

    async def _device(
        self,
        device: _Device,
        context: ssl.SSLContext,
        gate: asyncio.Semaphore,
        started: asyncio.Future[None],
    ) -> None:
        reading: asyncio.Task[None] | None = None
        try:
            async with gate:
                reader, writer, decoder = await self._open(device.device_id, context)
            self._writers.append(writer)
            writer.write(
                mqtt.encode(
                    mqtt.Subscribe(
                        1,
                        (("$iothub/twin/res/#", 0), ("$iothub/twin/PATCH/properties/desired/#", 0)),
                    )
                )
            )
            writer.write(mqtt.encode(mqtt.Publish("$iothub/twin/GET/?$rid=get", b"", 0)))
            got_twin = asyncio.Event()
            reading = asyncio.create_task(self._read(device, reader, decoder, got_twin))
            await asyncio.wait_for(got_twin.wait(), 30)
            started.set_result(None)
            while True:
                await asyncio.sleep(self.period_s)
                report = self._next_report(device)
                if report is not None:
                    device.rid += 1
                    if device.workflow is not None and device.step > len(STEPS):
                        device.ack_rids[str(device.rid)] = device.installed
                    topic = f"$iothub/twin/PATCH/properties/reported/?$rid={device.rid}"
                    writer.write(mqtt.encode(mqtt.Publish(topic, json.dumps(report).encode(), 0)))
                    device.last_report = time.monotonic()
                if reading.done():
                    raise ConnectionError(f"{device.device_id}: the hub closed the connection")
        except asyncio.CancelledError:
            if reading is not None:
                reading.cancel()
            raise
        except Exception as exc:
            self.errors.append(f"{device.device_id}: {exc!r}")
            if not started.done():
                started.set_exception(exc)

    async def _open(
        self, device_id: str, context: ssl.SSLContext
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, mqtt.PacketDecoder]:
        username = f"{self.hostname}/{device_id}/?api-version=2021-04-12"
        token = make_sas_token(
            f"{self.hostname}/devices/{device_id}", self.key, int(time.time()) + 3600
        )
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=context, server_hostname="localhost"
        )
        writer.write(mqtt.encode(mqtt.Connect(device_id, 600, True, username, token.encode())))
        decoder = mqtt.PacketDecoder()
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(f"{device_id}: closed before CONNACK")
            packets = decoder.feed(data)
            if packets:
                ack = packets[0]
                if not isinstance(ack, mqtt.ConnAck) or ack.return_code != 0:
                    raise ConnectionError(f"{device_id}: refused with {ack}")
                return reader, writer, decoder

    async def _read(
        self,
        device: _Device,
        reader: asyncio.StreamReader,
        decoder: mqtt.PacketDecoder,
        got_twin: asyncio.Event,
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for packet in decoder.feed(data):
                if not isinstance(packet, mqtt.Publish):
                    continue
                if packet.topic.startswith("$iothub/twin/res/200/?$rid=get"):
                    body = json.loads(packet.payload)
                    device.desired = body["desired"]
                    self._desired_changed(device)
                    got_twin.set()
                elif packet.topic.startswith("$iothub/twin/PATCH/properties/desired/"):
                    merge(device.desired, json.loads(packet.payload))
                    self._desired_changed(device)
                elif packet.topic.startswith("$iothub/twin/res/204/"):
                    rid = packet.topic.split("$rid=")[1].split("&")[0]
                    if rid in device.ack_rids:
                        with self.lock:
                            self.acked.add((device.device_id, device.ack_rids[rid]))
                elif packet.topic.startswith("$iothub/twin/res/"):
                    self.errors.append(f"{device.device_id}: hub answered {packet.topic}")

    def _desired_changed(self, device: _Device) -> None:
        wid, action = workflow_of(device.desired)
        if wid is None or action is None:
            return
        with self.lock:
            seen = self.history.setdefault(device.device_id, [])
            if seen and seen[-1] == (wid, action):
                return
            seen.append((wid, action))
        if action == DEPLOY:
            release = wid.split(".")[1]
            self.director_log.refresh()
            if release not in self.director_log.assigned.get(device.device_id, set()):
                with self.lock:
                    self.unsigned.append((device.device_id, wid))

    def _next_report(self, device: _Device) -> dict[str, Any] | None:
        """The agent's next reported state: one step per period, then a heartbeat."""
        wid, action = workflow_of(device.desired)
        if wid is None:
            return None
        if action != DEPLOY:
            if device.workflow == wid:
                device.workflow = None  # cancelled: back to idle on what it runs
                return _agent("idle", None, device.installed, "", "")
            return None
        if device.workflow != wid:
            device.workflow, device.step = wid, 0
        release = wid.split(".")[1]
        if device.bad:
            if device.step == 0:
                device.step = 1
                return _agent("failed", wid, device.installed, "check", "signature")
            return None
        if device.step < len(STEPS):
            device.step += 1
            return _agent("deploying", wid, device.installed, STEPS[device.step - 1], "")
        if device.step == len(STEPS) or time.monotonic() - device.last_report >= self.heartbeat_s:
            device.step = len(STEPS) + 1
            device.installed = release
            return _agent("idle", wid, release, "confirm", "")
        return None


def device_ids(count: int) -> list[str]:
    return [f"dev-{n:05d}" for n in range(count)]
