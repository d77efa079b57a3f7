"""The service runtime in process (memory hub, SQLite, filesystem blobs), and `tinyfleet serve`
as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from device_agent.protocol import COMPONENT
from service.blobs import AzureBlobStore
from service.config import Settings
from service.hubgateway import MemoryHubGateway
from service.releases import publication_urls
from service.runtime import ServiceRuntime
from service.trust import TrustService
from signing.keys import DEV_PASSPHRASE, KeyScheme
from tests.contract.blobs.conftest import Azurite
from tests.unit.releases._models import prebuilt

API = "/api/v1"
SERVE = "from service.cli.main import main; main()"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[ServiceRuntime, MemoryHubGateway]]:
    hub = MemoryHubGateway()
    settings = Settings(data_dir=tmp_path / "data", api_port=0, engine_interval=0.05)
    service = ServiceRuntime(settings, hub=hub)
    try:
        yield service, hub
    finally:
        service.stop()


def test_first_start_bootstraps_and_a_restart_reuses(
    runtime: tuple[ServiceRuntime, MemoryHubGateway],
) -> None:
    service, hub = runtime
    first = service.start()
    assert first.admin_token_created
    assert stat.S_IMODE(first.admin_token_file.stat().st_mode) == 0o600
    assert first.admin_token_file.read_text() == first.admin_token
    assert first.blob_url is not None and first.blob_url.startswith("http://127.0.0.1:")
    health = httpx.get(f"{first.api_url}{API}/health").json()
    assert health["engine"] and health["releases"] and health["hub"] and health["telemetry"]
    service.stop()
    again = ServiceRuntime(service.settings, hub=hub)
    try:
        second = again.start()
        assert not second.admin_token_created
        assert second.admin_token == first.admin_token
        auth = {"Authorization": f"Bearer {second.admin_token}"}
        tokens = httpx.get(f"{second.api_url}{API}/tokens", headers=auth).json()["items"]
        assert [t["name"] for t in tokens] == ["admin"]
    finally:
        again.stop()


def test_a_rollout_reaches_the_hub_through_the_running_service(
    runtime: tuple[ServiceRuntime, MemoryHubGateway],
) -> None:
    service, hub = runtime
    for n in range(3):
        hub.register_device(f"dev-{n}")
        hub.set_tags(f"dev-{n}", {"fleet": "demo", "hardwareId": "mt3620"})
    addresses = service.start()
    client = httpx.Client(
        base_url=f"{addresses.api_url}{API}",
        headers={"Authorization": f"Bearer {addresses.admin_token}"},
        timeout=30,
    )
    with client:
        assert client.post("/devices/sync").json() == {"synced": 3}
        group = {"name": "demo", "kind": "tag", "selector": "fleet=demo"}
        assert client.put("/groups/demo", json=group).json()["members"] == 3
        for release_id, model, counter in (("rel-1", "kws-v1.0.0", 1), ("rel-2", "kws-v2.0.0", 2)):
            body = {"id": release_id, "hardware_ids": ["mt3620"], "counter": counter}
            assert client.post("/releases", json=body).status_code == 201
            data, sidecar = prebuilt(model)
            uploaded = client.put(
                f"/releases/{release_id}/artifacts/m4-0",
                files={"file": ("m.tflite", data)},
                data={"metadata": json.dumps(sidecar)},
            )
            assert uploaded.status_code == 200, uploaded.text
            assert client.post(f"/releases/{release_id}/publish").status_code == 200
        rollout = {
            "id": "ro-1",
            "release_id": "rel-2",
            "group_id": "demo",
            "previous_release_id": "rel-1",
            "stages": [{"name": "all", "percent": 100, "soak_seconds": 0}],
        }
        assert client.post("/rollouts", json=rollout).status_code == 201
        started = client.post("/rollouts/ro-1/commands", json={"command": "start"})
        assert started.status_code == 200, started.text
        offered = threading.Event()
        for _ in range(200):  # the engine loop ticks every 50 ms; wait for its offers
            desired = [hub.desired(f"dev-{n}").get(COMPONENT, {}) for n in range(3)]
            if all(d.get("service", {}).get("workflow", {}).get("id") for d in desired):
                offered.set()
                break
            offered.wait(0.05)
        assert offered.is_set()
        repository = desired[0]["service"]["repository"]
        assert service.blobs is not None
        urls = publication_urls(service.blobs, timedelta(minutes=5))
        assert repository["imageUrl"] == urls.image_url
        assert repository["directorUrl"] == urls.director_url_for("dev-0")
        assert httpx.get(f"{urls.image_url}1.root.json?{urls.query}").status_code == 200
        own = repository["query"]  # dev-0's grant: its own director folder, not dev-1's
        director = httpx.get(f"{urls.director_url_for('dev-0')}1.targets.json?{own}")
        assert director.status_code == 200
        other = httpx.get(f"{urls.director_url_for('dev-1')}1.targets.json?{own}")
        assert other.status_code == 403
        assert "rel-2" in director.text
        totals = client.get("/rollouts/ro-1").json()["totals"]
        assert totals.get("offered") == 3, totals
        assert client.get("/audit/verify").json()["ok"] is True


def test_serve_subprocess(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "TINYFLEET_DATA_DIR": str(data)}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--port", "0", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    try:
        lines = []
        url = None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("tinyfleet API"):
                url = line.split()[2]
            if line.startswith("ready") or len(lines) > 50:
                break
        assert url is not None, "".join(lines)
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        secret = (data / "admin-token").read_text().strip()
        # not a terminal: the secret stays in its 0600 file, and the output says where
        assert not any(secret in line for line in lines)
        assert any(str(data / "admin-token") in line for line in lines), "".join(lines)
        answer = httpx.get(f"{url}/tokens", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200
        assert [t["role"] for t in answer.json()["items"]] == ["admin"]
        assert httpx.get(f"{url}/tokens").status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopping" in rest


def test_repositories_made_by_repo_init_are_adopted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_port=0)
    earlier = TrustService(settings, lambda: DEV_PASSPHRASE)  # `tinyfleet keys/repo init`
    earlier.init_keys(KeyScheme.ED25519)
    earlier.init_repos(datetime.now(UTC))
    root = (settings.repo_dir / "image/metadata/1.root.json").read_bytes()
    service = ServiceRuntime(settings)
    try:
        service.start()
        assert service.blobs is not None
        assert b"".join(service.blobs.get("repo/image/metadata/1.root.json")) == root
        assert service.context is not None and service.context.releases is not None
        releases = service.context.releases
        releases.create_draft("r1", ["mt3620"], 1, "alice")
        data, sidecar = prebuilt("kws-v2.0.0")
        releases.add_artifact("r1", "m4-0", iter([data]), sidecar, "alice")
        assert releases.publish("r1", "alice").status == "published"
    finally:
        service.stop()


def test_azure_blob_store_keeps_drafts_out_of_the_repository_container(
    tmp_path: Path, azurite: Azurite
) -> None:
    container = f"c{uuid.uuid4().hex[:16]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        api_port=0,
        blob_url=f"azure://{container}",
        blob_connection_string=azurite.connection_string,
    )
    service = ServiceRuntime(settings)
    try:
        addresses = service.start()
        assert addresses.blob_url is None
        assert service.blobs is not None and service.context is not None
        assert service.blobs.exists("repo/image/metadata/1.root.json")
        releases = service.context.releases
        assert releases is not None
        releases.create_draft("r1", ["mt3620"], 1, "alice")
        data, sidecar = prebuilt("kws-v2.0.0")
        releases.add_artifact("r1", "m4-0", iter([data]), sidecar, "alice")
        drafts = AzureBlobStore.from_connection_string(
            azurite.connection_string, f"{container}-drafts"
        )
        assert drafts.list("")
        assert not [p for p in service.blobs.list("") if not p.startswith("repo/")]
    finally:
        service.stop()


def test_blobs_served_by_another_process_are_signed_for_it(tmp_path: Path) -> None:
    """`blob_serve` off: the runtime starts no blob server of its own and signs URLs for the one
    at `blob_public_url` (the stack's, which outlives service restarts)."""
    from service.blobs import BlobServer, FilesystemBlobStore

    key = b"k" * 32
    outside = BlobServer(key, port=0)
    outside.start(FilesystemBlobStore(tmp_path / "data" / "blobs", outside.signer()))
    settings = Settings(
        data_dir=tmp_path / "data",
        api_port=0,
        blob_serve=False,
        blob_public_url=outside.url,
        blob_signing_key=key.decode(),
    )
    service = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        addresses = service.start()
        assert addresses.blob_url == outside.url
        assert service.blobs is not None
        urls = publication_urls(service.blobs, timedelta(minutes=5))
        assert urls.image_url.startswith(outside.url)
        root = httpx.get(f"{urls.image_url}1.root.json?{urls.query}")
        assert root.status_code == 200 and json.loads(root.content)["signed"]["_type"] == "root"
        assert httpx.get(f"{urls.image_url}1.root.json").status_code == 403
    finally:
        service.stop()
        outside.stop()
