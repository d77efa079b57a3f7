"""A device over the real wire: the agent speaks MQTT over TLS to the mock hub, the service side
drives it through the unmodified azure-iot-hub SDK, metadata and targets come over HTTP, and the
telemetry lands in the hub's durable feed. The agent's core processes run real TFLM models."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin

from device_agent.hub_client import HubOptions
from device_agent.hub_dialect import ConnectionString
from device_agent.protocol import decode_batch
from infra.hub import BackgroundHub, FeedConsumer, HubConfig, TelemetryFeed, provision_device
from infra.simdevice import CoreSpec, SimulatedDevice
from service.config import Settings
from service.trust import ArtifactSpec, TrustService
from signing.keys import DEV_PASSPHRASE, KeyScheme
from tests.agent_world import PREBUILT, wait_for


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    trust = TrustService(Settings(data_dir=tmp_path / "svc"), lambda: DEV_PASSPHRASE)
    trust.init_keys(KeyScheme.ED25519)
    now = datetime.now(UTC)
    trust.init_repos(now)
    for release_id, version in (("r1", "1.0.0"), ("r2", "2.0.0")):
        specs = [
            ArtifactSpec.from_file(PREBUILT / f"{line}-v{version}.tflite", core, ["mt3620"], 1)
            for line, core in (("kws", "m4-0"), ("vibration", "m4-1"))
        ]
        trust.sign_release(release_id, 1, ["mt3620"], specs, now)
    handler = functools.partial(_Quiet, directory=str(trust.settings.repo_dir))
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    config = HubConfig(data_dir=tmp_path / "hub", mqtt_port=0, https_port=0)
    provisioned = provision_device(config, "dev-1")
    with BackgroundHub(config) as hub:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hub.server.ca_cert))
        info = json.loads((config.data_dir / "hub.json").read_text())
        registry = IoTHubRegistryManager.from_connection_string(info["service_connection_string"])
        device = SimulatedDevice(
            device_id="dev-1",
            hardware_id="mt3620",
            profile="mt3620",
            state_dir=tmp_path / "dev",
            image_root=trust.image().root_bytes(),
            director_root=trust.director().root_bytes(),
            connection=ConnectionString.parse(provisioned.connection_string),
            hub_options=HubOptions(ca_file=Path(hub.server.ca_cert), port=hub.server.mqtt_port),
            health_interval_s=1.0,
            cores={
                "m4-0": CoreSpec(inference_period_s=0.05, seed=1),
                "m4-1": CoreSpec(inference_period_s=0.05, seed=2),
            },
        )
        device.start()
        try:
            yield {
                "trust": trust,
                "registry": registry,
                "device": device,
                "config": config,
                "base": f"http://127.0.0.1:{http.server_address[1]}",
            }
        finally:
            device.stop()
            http.shutdown()


def _deploy(stack: dict[str, object], workflow_id: str) -> None:
    registry: IoTHubRegistryManager = stack["registry"]  # type: ignore[assignment]
    base = stack["base"]
    service = {
        "workflow": {"action": 3, "id": workflow_id},
        "repository": {
            "imageUrl": f"{base}/image/metadata/",
            "directorUrl": f"{base}/director/devices/dev-1/metadata/",
            "targetsUrl": f"{base}/image/targets/",
        },
    }
    twin = registry.get_twin("dev-1")
    registry.update_twin(
        "dev-1",
        Twin(properties={"desired": {"tinyfleet": {"__t": "c", "service": service}}}),
        twin.etag,
    )


def _agent(stack: dict[str, object]) -> dict[str, object]:
    registry: IoTHubRegistryManager = stack["registry"]  # type: ignore[assignment]
    reported = registry.get_twin("dev-1").properties.reported or {}
    return reported.get("tinyfleet", {}).get("agent", {})


def test_release_installs_over_the_hub_and_telemetry_reaches_the_feed(
    stack: dict[str, object],
) -> None:
    trust: TrustService = stack["trust"]  # type: ignore[assignment]
    registry: IoTHubRegistryManager = stack["registry"]  # type: ignore[assignment]
    config: HubConfig = stack["config"]  # type: ignore[assignment]
    trust.assign("dev-1", "mt3620", "r1", datetime.now(UTC))
    _deploy(stack, "wf-1")
    wait_for(lambda: _agent(stack).get("installedReleaseId") == "r1", 90, "r1 over the hub")

    trust.assign("dev-1", "mt3620", "r2", datetime.now(UTC))
    _deploy(stack, "wf-2")
    wait_for(lambda: _agent(stack).get("installedReleaseId") == "r2", 90, "r2 over the hub")
    cores = _agent(stack)["cores"]
    assert {c["activeModel"]["version"] for c in cores.values()} == {"2.0.0"}  # type: ignore[union-attr]

    status = registry.invoke_device_method(
        "dev-1",
        CloudToDeviceMethod(method_name="get-status", payload={}, response_timeout_in_seconds=15),
    )
    assert status.status == 200 and status.payload["installedReleaseId"] == "r2"

    feed = TelemetryFeed.open(config.feed_path)
    consumer = FeedConsumer(feed, "test")

    def inference_seen() -> bool:
        for event in consumer.receive(500):
            batch = decode_batch(event.body, device_id=event.device_id)
            if any(r.model_version == "2.0.0" for r in batch.inference):
                return True
        return False

    wait_for(inference_seen, 60, "v2 inference telemetry in the feed")
    feed.close()
