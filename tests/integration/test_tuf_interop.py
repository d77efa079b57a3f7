"""What tinyfleet publishes is a plain TUF repository: any python-tuf client reads it over HTTP.

A directory store is served by a stock HTTP server on a free loopback port; an unmodified
python-tuf `Updater` with its default urllib3 fetcher refreshes and downloads a target, and the
device verifier does its whole check over the same HTTP.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tuf.ngclient import Updater, Urllib3Fetcher

from service.config import Settings
from service.trust import ArtifactSpec, TrustService
from signing.device import DeviceIdentity, DeviceVerifier
from signing.keys import KeyScheme
from tests.signing_world import model_custom


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TrustService, str]]:
    settings = Settings(data_dir=tmp_path / "data")
    service = TrustService(settings, lambda: "tinyfleet-dev-only")
    service.init_keys(KeyScheme.ED25519)
    now = datetime.now(UTC)
    service.init_repos(now)
    model = tmp_path / "kws-v1.0.0.tflite"
    model.write_bytes(b"\x42" * 70000)
    custom = model_custom()
    spec = ArtifactSpec(model, "m4-0", custom)
    service.sign_release("r1", 1, ["mt3620"], [spec], now)
    service.assign("dev-1", "mt3620", "r1", now)
    handler = functools.partial(_Quiet, directory=str(settings.repo_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_stock_python_tuf_client_reads_the_image_repository(
    served: tuple[TrustService, str], tmp_path: Path
) -> None:
    service, base = served
    metadata = tmp_path / "client-metadata"
    metadata.mkdir()
    updater = Updater(
        str(metadata),
        f"{base}/image/metadata/",
        str(tmp_path),
        f"{base}/image/targets/",
        bootstrap=(service.settings.repo_dir / "image/metadata/1.root.json").read_bytes(),
    )
    info = updater.get_targetinfo("models/kws/kws-v1.0.0.tflite")
    assert info is not None and info.length == 70000
    path = updater.download_target(info)
    assert Path(path).read_bytes() == b"\x42" * 70000


def test_device_verifies_over_http_and_after_a_scheduled_refresh(
    served: tuple[TrustService, str], tmp_path: Path
) -> None:
    service, base = served

    def device() -> DeviceVerifier:
        return DeviceVerifier(
            DeviceIdentity("dev-1", "mt3620"),
            tmp_path / "device",
            image_root=(service.settings.repo_dir / "image/metadata/1.root.json").read_bytes(),
            director_root=(
                service.settings.repo_dir / "director/root/metadata/1.root.json"
            ).read_bytes(),
            fetcher=Urllib3Fetcher(),
            image_url=f"{base}/image/metadata/",
            director_url=f"{base}/director/devices/dev-1/metadata/",
        )

    release = device().check()
    assert release is not None and release.release_id == "r1"

    # 23 hours later the timestamps expire within the refresh window; the schedule re-signs them.
    renewed = service.refresh(datetime.now(UTC) + timedelta(hours=23))
    assert "timestamp" in renewed["image"] and renewed["director"] == ["dev-1"]
    again = device().check()
    assert again is not None and again.release_id == "r1"
