"""`tinyfleet up`: starts the stack, prints where everything is, stops on Ctrl-C, and comes back
on the same data folder with the same devices, ports and state."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from azure.iot.hub import IoTHubRegistryManager

from infra.fleet import FleetError, FleetOptions
from infra.hub import BackgroundHub, HubConfigError
from infra.stack import Stack, StackError, StackOptions
from service.cli._demo_fleet import Api, prepare, stage, watch
from service.cli.up import groups_for
from service.config import Settings
from tests.agent_world import wait_for

TINYFLEET = Path(sys.executable).parent / "tinyfleet"


class _Up:
    """`tinyfleet up` as a child process, its output collected by a reader thread."""

    def __init__(self, data: Path, *extra: str) -> None:
        env = {**os.environ, "COLUMNS": "250", "TINYFLEET_MODE": "dev"}
        self.process = subprocess.Popen(
            [str(TINYFLEET), "up", "--data", str(data), "--api-port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # its own process group, as in a terminal
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        """Ctrl-C in a terminal: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(10)
        return code


@pytest.fixture
def up_processes() -> Iterator[list[_Up]]:
    started: list[_Up] = []
    yield started
    for up in started:
        if up.process.poll() is None:
            up.process.kill()
            up.process.wait(10)


def _connected(registry: IoTHubRegistryManager, device_id: str) -> bool:
    return str(registry.get_device(device_id).connection_state) == "Connected"


def test_up_starts_stops_on_ctrl_c_and_restarts_on_the_same_data(
    tmp_path: Path, up_processes: list[_Up], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "up"
    first = _Up(data, "--groups", "canary:1,main:2", "--inference-period", "1.0")
    up_processes.append(first)
    wait_for(lambda: "running" in first.output or first.process.poll() is not None, 180, "up")
    assert first.process.poll() is None, first.output
    for label in ("hub MQTT", "hub service connection string", "blob store", "devices"):
        assert label in first.output, first.output
    assert "canary: 1, main: 2" in first.output
    # Captured (not a terminal): no secret in the output, only where each is kept.
    assert re.search(r"dashboard\s+│ http://127\.0\.0\.1:\d+/ ", first.output)
    admin_secret = (data / "service" / "admin-token").read_text().strip()
    assert admin_secret not in first.output and "?token=" not in first.output

    hub = json.loads((data / "hub" / "hub.json").read_text())
    assert hub["service_connection_string"].split("SharedAccessKey=")[1] not in first.output
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", hub["ca_cert"])
    registry = IoTHubRegistryManager.from_connection_string(hub["service_connection_string"])
    devices = sorted(p.parent.name for p in (data / "fleet").glob("*/identity.json"))
    assert devices == ["dev-001", "dev-002", "dev-003"]
    for device_id in devices:
        wait_for(lambda d=device_id: _connected(registry, d), 90, f"{device_id} connected")
    tags = {d: registry.get_twin(d).tags["group"] for d in devices}
    assert tags == {
        "dev-001": "canary",
        "dev-002": "main",
        "dev-003": "main",
    }
    ports = json.loads((data / "stack.json").read_text())["ports"]
    # the service's registry is filled now, and must survive the restart
    token = (data / "service" / "admin-token").read_text().strip()
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{ports['api']}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert api.post("/devices/sync").json()["synced"] == 3

    assert first.interrupt() == 0, first.output
    assert "stopped" in first.output
    assert not re.search(r"Traceback|KeyboardInterrupt", first.output), first.output

    second = _Up(data)  # no groups: the devices of the first run
    up_processes.append(second)
    wait_for(lambda: "running" in second.output or second.process.poll() is not None, 180, "up")
    assert second.process.poll() is None, second.output
    assert json.loads((data / "stack.json").read_text())["ports"] == ports
    again = json.loads((data / "hub" / "hub.json").read_text())
    assert again["mqtt_port"] == hub["mqtt_port"]
    registry = IoTHubRegistryManager.from_connection_string(again["service_connection_string"])
    for device_id in devices:
        wait_for(lambda d=device_id: _connected(registry, d), 90, f"{device_id} back")
    assert sorted(p.parent.name for p in (data / "fleet").glob("*/identity.json")) == devices
    devices_after = api.get("/devices").json()["items"]  # no sync: what the database kept
    assert sorted(d["id"] for d in devices_after) == devices
    api.close()
    assert second.interrupt() == 0, second.output
    assert not re.search(r"Traceback|KeyboardInterrupt", second.output), second.output


def test_stack_restarts_the_hub_on_the_same_ports_and_devices_come_back(tmp_path: Path) -> None:
    options = StackOptions(
        data_dir=tmp_path / "stack",
        groups={"canary": 1, "main": 1},
        fleet=FleetOptions(inference_period_s=1.0, backoff_max_s=1.0),
    )
    with Stack(options, service_factory=False) as stack:
        assert stack.hub is not None and stack.fleet is not None
        mqtt = stack.hub.server.mqtt_port

        def online() -> bool:
            hub = stack.hub
            assert hub is not None
            return bool(hub.call(lambda: {"dev-001", "dev-002"} <= set(hub.core.links)))

        wait_for(online, 60, "both devices online")
        stack.restart_hub()
        assert stack.hub.server.mqtt_port == mqtt
        wait_for(online, 60, "both devices back after the hub restart")
        described = stack.describe()
        assert described["devices"] == {"canary": 1, "main": 1}
        assert described["service"] is None


@pytest.mark.parametrize(
    ("devices", "groups", "expected"),
    [
        (20, None, {"canary": 2, "main": 18}),
        (1, None, {"canary": 1}),
        (None, "a:1,b:2", {"a": 1, "b": 2}),
        (3, "a:1,b:2", {"a": 1, "b": 2}),
        (None, None, None),
    ],
    ids=["devices-only", "one-device", "groups-only", "both-agree", "neither"],
)
def test_group_options(
    devices: int | None, groups: str | None, expected: dict[str, int] | None
) -> None:
    assert groups_for(devices, groups) == expected


@pytest.mark.parametrize(
    ("devices", "groups"), [(4, "a:1,b:2"), (0, None), (None, "a")], ids=["mismatch", "zero", "bad"]
)
def test_bad_group_options_are_refused(devices: int | None, groups: str | None) -> None:
    with pytest.raises(FleetError):
        groups_for(devices, groups)


def test_unknown_blob_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError):
        StackOptions(data_dir=tmp_path, blob="s3")


def test_nothing_runs_after_a_failed_start(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    (tmp_path / "stack").mkdir()
    ports = {"ports": {"mqtt": busy.getsockname()[1]}}
    (tmp_path / "stack" / "stack.json").write_text(json.dumps(ports))
    stack = Stack(StackOptions(data_dir=tmp_path / "stack"), service_factory=False)
    try:
        with pytest.raises(HubConfigError, match="cannot listen"):
            stack.start()
    finally:
        busy.close()
    assert stack.hub is None and stack.fleet is None and stack.blob_server is None


@dataclass(frozen=True)
class _Addresses:
    api_url: str
    admin_token: str


class _RecordingService:
    """A service runtime stand-in that records how the stack composed and drove it."""

    def __init__(self, settings: Settings, hub: BackgroundHub, log: list[str]) -> None:
        self.settings, self.hub, self.log = settings, hub, log

    def start(self) -> _Addresses:
        self.log.append("start")
        port = self.settings.api_port or 40000 + len(self.log)
        return _Addresses(f"http://127.0.0.1:{port}", "secret")

    def stop(self) -> None:
        self.log.append("stop")


def test_the_service_seam_gets_the_hub_and_keeps_its_port_across_restarts(tmp_path: Path) -> None:
    log: list[str] = []
    built: list[_RecordingService] = []

    def factory(settings: Settings, hub: BackgroundHub) -> _RecordingService:
        built.append(_RecordingService(settings, hub, log))
        return built[-1]

    options = StackOptions(data_dir=tmp_path / "stack", start_fleet=False)
    with Stack(options, service_factory=factory) as stack:
        settings = built[0].settings
        assert settings.hub_connection_string is not None
        assert f"localhost:{stack.hub.server.https_port}" in (  # type: ignore[union-attr]
            settings.hub_connection_string.get_secret_value()
        )
        assert settings.telemetry_source.startswith("mockhub:")
        assert settings.blob_public_url == stack.blob_server.url  # type: ignore[union-attr]
        assert stack.describe()["service"] == {
            "api_url": "http://127.0.0.1:40001",
            "admin_token": "secret",
        }
        stack.restart_service()
        assert built[1].settings.api_port == 40001
        assert stack.addresses["api_url"] == "http://127.0.0.1:40001"
    assert log == ["start", "stop", "start", "stop"]
    ports = json.loads((tmp_path / "stack" / "stack.json").read_text())["ports"]
    assert ports["api"] == 40001


def test_up_finishes_a_staged_rollout_beside_a_cpu_hog(
    tmp_path: Path, up_processes: list[_Up], cpu_hog: None
) -> None:
    """`tinyfleet up`, then what an operator does next, through the API: registry synced, tag
    groups, v1 installed everywhere, v2 staged canary then all. Every rollout completes with
    another CPU-bound process beside the stack, and no core's link gives up on its frames."""
    data = tmp_path / "up"
    up = _Up(data, "--groups", "canary:1,main:3", "--inference-period", "1.0")
    up_processes.append(up)
    wait_for(lambda: "running" in up.output or up.process.poll() is not None, 180, "up")
    assert up.process.poll() is None, up.output
    ports = json.loads((data / "stack.json").read_text())["ports"]
    token = (data / "service" / "admin-token").read_text().strip()
    api = Api(f"http://127.0.0.1:{ports['api']}", token)
    try:
        prepare(api, {"canary": 1, "main": 3}, 240, releases=2)  # v1 bootstrapped on both
        # No gate asked for: with a previous release the default gate would apply, which a
        # canary of one device cannot satisfy; `"gate": "none"` is the documented opt-out.
        body = {
            "id": "v2-main",
            "release_id": "models-v2",
            "previous_release_id": "models-v1",
            "group_id": "main",
            "gate": "none",
            "stages": [stage("canary", None, 2, count=1), stage("all", 100, 2)],
        }
        api.call("POST", "/rollouts", json=body)
        api.call("POST", "/rollouts/v2-main/commands", json={"command": "start"})
        done = watch(api, "v2-main", 300, quiet=True)
        api.call("POST", "/devices/sync")
        items = api.call("GET", "/devices", params={"limit": 100})["items"]
        running = {d["tags"].get("group"): set() for d in items}
        for device in items:
            running[device["tags"].get("group")].add(device["release"])
    finally:
        api.close()
    assert done["state"] == "completed", done
    assert running == {"canary": {"models-v1"}, "main": {"models-v2"}}, running
    assert "unacknowledged after" not in up.output, up.output[-3000:]
    assert up.interrupt() == 0, up.output
