"""The unmodified `azure-iot-device` SDK, from its own venv, with a GatewayHostName string."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from infra.hub import BackgroundHub, FeedConsumer, TelemetryFeed, provision_device
from tests.integration.hub.conftest import rest

ROOT = Path(__file__).resolve().parents[3]
SDK_PYTHON = ROOT / ".venv-azure-device" / "bin" / "python"
SCRIPT = Path(__file__).with_name("azure_device_script.py")


def _next_event(process: subprocess.Popen[str], name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            event = json.loads(line)
            if event["event"] == name:
                return event
    raise AssertionError(
        f"the device SDK never reported {name!r}: {process.stderr.read() if process.stderr else ''}"
    )


def test_device_sdk_telemetry_twin_and_method(hub: BackgroundHub) -> None:
    if not SDK_PYTHON.exists():
        pytest.fail("`.venv-azure-device` is missing: run `make setup` (it builds it)")
    device = provision_device(hub.server.config, "sdkdev")
    assert "GatewayHostName=localhost" in device.connection_string
    process = subprocess.Popen(
        [
            str(SDK_PYTHON),
            str(SCRIPT),
            device.connection_string,
            str(hub.server.ca_cert),
            str(hub.server.mqtt_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _next_event(process, "sent")
        [event] = FeedConsumer(TelemetryFeed.open(hub.server.config.feed_path)).receive(10)
        assert event.device_id == "sdkdev" and json.loads(event.body) == {"temp": 21.5}
        assert event.properties == {"alert": "high temp"}
        assert event.system_properties["message-id"] == "m-1"
        assert event.system_properties["content-type"] == "application/json"
        twin = _next_event(process, "twin")["twin"]
        assert twin["desired"]["$version"] == 1 and twin["reported"]["$version"] == 1
        _next_event(process, "reported")
        assert hub.core.store.twins["sdkdev"].reported == {"fw": "1.2.3"}
        _next_event(process, "ready")
        time.sleep(0.5)  # the SDK subscribes in the background after setting handlers
        assert (
            rest(
                hub, "PATCH", "/twins/sdkdev", json={"properties": {"desired": {"interval": 7}}}
            ).status_code
            == 200
        )
        assert _next_event(process, "desired")["patch"] == {"interval": 7, "$version": 2}
        body = {"methodName": "calibrate", "payload": {"gain": 2}, "responseTimeoutInSeconds": 15}
        reply = rest(hub, "POST", "/twins/sdkdev/methods", json=body)
        assert reply.json() == {"status": 200, "payload": {"done": True}}
        assert _next_event(process, "method")["payload"] == {"gain": 2}
        assert _next_event(process, "done")["ok"] is True
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()
    assert sys.executable != str(SDK_PYTHON)
