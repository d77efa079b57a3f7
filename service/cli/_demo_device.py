"""The demo's last act: a simulated device installs the release over the real wire.

The mock hub on free ports (MQTT over TLS for the device, HTTPS for the azure-iot-hub SDK), the
published repositories served over HTTP, and one device: the agent with two M4 core processes
running the models with TFLM. The desired twin is written with the unmodified Azure SDK; the
agent verifies, streams, activates and confirms, then its inference telemetry arrives in the
hub's feed.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin

from device_agent.hub_client import HubOptions
from device_agent.hub_dialect import ConnectionString
from device_agent.protocol import TelemetryError, decode_batch
from infra.hub import BackgroundHub, FeedConsumer, HubConfig, TelemetryFeed, provision_device
from infra.simdevice import CoreSpec, SimulatedDevice
from service.cli._output import console, emit_table
from service.trust import TrustService
from signing.device_ids import device_segment


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def run_device(service: TrustService, device_id: str, release_id: str) -> None:
    console.print(
        f"7. a simulated device installs {release_id} over MQTT/TLS through the mock "
        "hub, with two M4 core processes running the models on TFLM"
    )
    repo = service.settings.repo_dir
    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(repo)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="tinyfleet-demo-hub-") as tmp:
        config = HubConfig(data_dir=Path(tmp) / "hub", mqtt_port=0, https_port=0)
        provisioned = provision_device(config, device_id)
        with BackgroundHub(config) as hub:
            os.environ["REQUESTS_CA_BUNDLE"] = str(hub.server.ca_cert)  # the SDK trusts the CA
            info = json.loads((config.data_dir / "hub.json").read_text())
            registry = IoTHubRegistryManager.from_connection_string(
                info["service_connection_string"]
            )
            device = SimulatedDevice(
                device_id=device_id,
                hardware_id="mt3620",
                profile="mt3620",
                state_dir=Path(tmp) / "device",
                image_root=service.image().root_bytes(),
                director_root=service.director().root_bytes(),
                connection=ConnectionString.parse(provisioned.connection_string),
                hub_options=HubOptions(ca_file=Path(hub.server.ca_cert), port=hub.server.mqtt_port),
                cores={
                    "m4-0": CoreSpec(inference_period_s=0.05, seed=1),
                    "m4-1": CoreSpec(inference_period_s=0.05, seed=2),
                },
            )
            device.start()
            try:
                _deploy(registry, device_id, base)
                started = time.monotonic()
                done = _wait(
                    lambda: _agent(registry, device_id).get("installedReleaseId") == release_id, 90
                )
                agent = _agent(registry, device_id)
                if not done:
                    console.print(
                        f"   [red]the device did not install {release_id}:[/] "
                        f"{agent.get('lastResult')}"
                    )
                    return
                console.print(
                    f"   installed in {time.monotonic() - started:.1f} s; the twin "
                    f"reports state {agent.get('state')!r}"
                )
                time.sleep(2.0)  # let a few telemetry batches arrive
                _telemetry(TelemetryFeed.open(config.feed_path))
            finally:
                device.stop()
                http.shutdown()


def _deploy(registry: IoTHubRegistryManager, device_id: str, base: str) -> None:
    service = {
        "workflow": {"action": 3, "id": f"demo-{int(time.time())}"},
        "repository": {
            "imageUrl": f"{base}/image/metadata/",
            "directorUrl": f"{base}/director/devices/{device_segment(device_id)}/metadata/",
            "targetsUrl": f"{base}/image/targets/",
        },
    }
    twin = registry.get_twin(device_id)
    registry.update_twin(
        device_id,
        Twin(properties={"desired": {"tinyfleet": {"__t": "c", "service": service}}}),
        twin.etag,
    )


def _agent(registry: IoTHubRegistryManager, device_id: str) -> dict[str, Any]:
    reported = registry.get_twin(device_id).properties.reported or {}
    agent = reported.get("tinyfleet", {}).get("agent", {})
    return agent if isinstance(agent, dict) else {}


def _telemetry(feed: TelemetryFeed) -> None:
    latency: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    score: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for event in FeedConsumer(feed, "demo").receive(10_000):
        try:
            batch = decode_batch(event.body, device_id=event.device_id)
        except TelemetryError:
            continue
        for record in batch.inference:
            key = (record.core, record.model_id, record.model_version)
            latency[key].append(record.latency_us)
            score[key].append(record.score)
    feed.close()
    emit_table(
        "   inference telemetry in the hub's feed",
        ["core", "model", "version", "results", "p50 latency µs", "mean score"],
        [
            (
                *key,
                len(values),
                int(statistics.median(values)),
                f"{statistics.fmean(score[key]):.3f}",
            )
            for key, values in sorted(latency.items())
        ],
    )
