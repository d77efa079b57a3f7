"""A hub process killed with SIGKILL loses nothing it acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.hub import FeedConsumer, HubConfig, TelemetryFeed, make_sas_token, provision_device
from tests.integration.hub.conftest import HOSTNAME, Device


@dataclass
class HubProcess:
    process: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def mqtt_port(self) -> int:
        return int(self.info["mqtt_port"])

    @property
    def ca_cert(self) -> str:
        return str(self.info["ca_cert"])

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        import ssl

        import httpx

        port, key = (
            self.info["https_port"],
            self.info["service_connection_string"].split("SharedAccessKey=")[1],
        )
        token = make_sas_token(
            f"localhost:{port}", key, int(time.time()) + 60, key_name="iothubowner"
        )
        context = ssl.create_default_context(cafile=self.ca_cert)
        with httpx.Client(verify=context) as client:
            url = f"https://localhost:{port}{path}?api-version=2021-04-12"
            return client.request(method, url, headers={"Authorization": token}, **kwargs)


def _start(data: Path) -> HubProcess:
    hub_json = data / "hub.json"
    hub_json.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-c",
        "from service.cli.hub import app; app()",
        "run",
        "--data",
        str(data),
    ]
    process = subprocess.Popen(
        [*command, "--mqtt-port", "0", "--https-port", "0"], stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if hub_json.exists():
            info = json.loads(hub_json.read_text())
            if info["pid"] == process.pid:
                return HubProcess(process, info)
        if process.poll() is not None:
            raise AssertionError(f"the hub exited with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the hub did not write hub.json in time")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "hub"


def test_acknowledged_data_survives_kill_9(data_dir: Path) -> None:
    first = _start(data_dir)
    try:
        key = provision_device(HubConfig(data_dir=data_dir, hostname=HOSTNAME), "dev1").primary_key
        assert key is not None
        dev = Device(first, "dev1").tls().sas(key).connect()
        dev.subscribe("devices/dev1/messages/devicebound/#", "$iothub/twin/res/#")
        for n in range(50):
            dev.publish(f"devices/dev1/messages/events/n={n}", b"%d" % n)  # waits for each PUBACK
        dev.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b'{"fw": "9.9"}')
        dev.expect("$iothub/twin/res/204")
        dev.close()
        assert (
            first.rest(
                "PATCH", "/twins/dev1", json={"properties": {"desired": {"mode": "eco"}}}
            ).status_code
            == 200
        )
        assert (
            first.rest("POST", "/devices/dev1/messages/deviceBound", content=b"pending").status_code
            == 200
        )
    finally:
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()

    second = _start(data_dir)
    try:
        events = FeedConsumer(TelemetryFeed.open(data_dir / "feed.sqlite")).receive(1000)
        assert [int(e.body) for e in events] == list(range(50))
        twin = second.rest("GET", "/twins/dev1").json()
        assert twin["properties"]["reported"]["fw"] == "9.9"
        assert twin["properties"]["desired"]["mode"] == "eco"
        back = (
            Device(second, "dev1").tls().sas(key).connect()
        )  # no SUBSCRIBE: the session persisted
        try:
            assert back.expect("devices/dev1/messages/devicebound/").payload == b"pending"
        finally:
            back.close()
    finally:
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(15) == 0
