"""`tinyfleet agent run` as an operator starts it: a process with its two core processes, talking
MQTT over TLS to the mock hub; it reports itself in the twin and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.iot.hub import IoTHubRegistryManager

from infra.hub import BackgroundHub, HubConfig, provision_device
from service.config import Settings
from service.trust import TrustService
from signing.keys import DEV_PASSPHRASE, KeyScheme
from tests.agent_world import wait_for


def test_agent_run_reports_over_the_hub_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = TrustService(Settings(data_dir=tmp_path / "svc"), lambda: DEV_PASSPHRASE)
    trust.init_keys(KeyScheme.ED25519)
    trust.init_repos(datetime.now(UTC))
    (tmp_path / "image-root.json").write_bytes(trust.image().root_bytes())
    (tmp_path / "director-root.json").write_bytes(trust.director().root_bytes())
    config = HubConfig(data_dir=tmp_path / "hub", mqtt_port=0, https_port=0)
    device = provision_device(config, "dev-cli")
    with BackgroundHub(config) as hub:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hub.server.ca_cert))
        info = json.loads((config.data_dir / "hub.json").read_text())
        registry = IoTHubRegistryManager.from_connection_string(info["service_connection_string"])
        tinyfleet = Path(sys.executable).parent / "tinyfleet"
        process = subprocess.Popen(
            [
                str(tinyfleet),
                "agent",
                "run",
                "--connection-string",
                device.connection_string,
                "--ca",
                str(hub.server.ca_cert),
                "--port",
                str(hub.server.mqtt_port),
                "--state",
                str(tmp_path / "dev"),
                "--image-root",
                str(tmp_path / "image-root.json"),
                "--director-root",
                str(tmp_path / "director-root.json"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:

            def reported() -> dict[str, object]:
                twin = registry.get_twin("dev-cli").properties.reported or {}
                return twin.get("tinyfleet", {}).get("agent", {})

            wait_for(lambda: reported().get("profile") == "mt3620", 60, "the agent's report")
            assert set(reported()["cores"]) == {"m4-0", "m4-1"}  # type: ignore[arg-type]
        finally:
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err.decode()[-2000:]
    assert not list((tmp_path / "dev").glob("**/*.partial"))
