"""Processes for the hub benchmark: the hub, mosquitto and amqtt, all with the hub's TLS setup."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.hub import HubConfig
from infra.hub._certs import ensure_ca, ensure_server_certificate
from infra.hub._store import DeviceRecord, HubStore
from infra.hub._twin import Twin

FULL = os.environ.get("TINYFLEET_BENCH_FULL") == "1"
HOSTNAME = "tinyfleet-hub.local"
KEY = base64.b64encode(b"bench-key-for-every-device-0123!").decode()


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    ca_cert: str

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not listen on {port}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    certs = tmp_path_factory.mktemp("pki")
    ca = ensure_ca(certs)
    server = ensure_server_certificate(certs, HOSTNAME)
    return ca.cert, server.cert, server.key


def provision_bulk(data: Path, count: int) -> None:
    config = HubConfig(data_dir=data, hostname=HOSTNAME)
    data.mkdir(parents=True, exist_ok=True)
    store = HubStore(config.db_path)
    for n in range(count):
        device_id = f"bench{n:05d}"
        store.put_device(DeviceRecord(device_id, "1", primary_key=KEY), Twin.new(device_id))
    store.close()


def start_hub(data: Path, pki: tuple[Path, Path, Path]) -> Server:
    certs = data / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    for source, name in zip(pki, ("ca.pem", "server.pem", "server.key"), strict=True):
        shutil.copy(source, certs / name)
    shutil.copy(pki[0].with_suffix(".key"), certs / "ca.key")
    port = _free_port()
    command = [sys.executable, "-c", "from service.cli.hub import app; app()", "run"]
    args = ["--data", str(data), "--mqtt-port", str(port), "--https-port", "0"]
    process = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL)
    _wait_listening(port, process, "hub")
    deadline = time.monotonic() + 30
    while not (data / "hub.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads((data / "hub.json").read_text())["mqtt_port"] == port
    return Server("hub", process, port, str(pki[0]))


def start_mosquitto(workdir: Path, pki: tuple[Path, Path, Path]) -> Server:
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"""user root
per_listener_settings false
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 1000000
listener {port} 127.0.0.1
cafile {pki[0]}
certfile {pki[1]}
keyfile {pki[2]}
"""
    )
    process = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_listening(port, process, "mosquitto")
    return Server("mosquitto", process, port, str(pki[0]))


def start_amqtt(workdir: Path, pki: tuple[Path, Path, Path]) -> Server:
    port = _free_port()
    conf = workdir / "amqtt.yaml"
    conf.write_text(
        f"""listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
    ssl: true
    certfile: {pki[1]}
    keyfile: {pki[2]}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""
    )
    amqtt = Path(sys.executable).with_name("amqtt")
    process = subprocess.Popen(
        [str(amqtt), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_listening(port, process, "amqtt")
    return Server("amqtt", process, port, str(pki[0]))


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()
