"""The service runtime keeps what devices and operators rely on across restarts: the blob port
(named in every URL already offered) and the audit chain's head."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from service.blobs import BlobConfigError
from service.config import Settings
from service.hubgateway import MemoryHubGateway
from service.runtime import BLOB_PORT_FILE, ServiceRuntime


def _settings(data: Path, **values: object) -> Settings:
    return Settings(data_dir=data, api_port=0, engine_interval=0.05, **values)  # type: ignore[arg-type]


def test_a_restart_keeps_the_first_chosen_blob_port(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    first = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        url = first.start().blob_url
    finally:
        first.stop()
    assert url is not None
    port = int((tmp_path / "data" / BLOB_PORT_FILE).read_text())
    assert url.startswith(f"http://127.0.0.1:{port}/")
    again = ServiceRuntime(settings, hub=MemoryHubGateway())
    try:
        assert again.start().blob_url == url
    finally:
        again.stop()


def test_a_kept_port_taken_by_another_process_fails_clearly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        data.mkdir()
        (data / BLOB_PORT_FILE).write_text(f"{squatter.getsockname()[1]}\n")
        service = ServiceRuntime(_settings(data), hub=MemoryHubGateway())
        with pytest.raises(BlobConfigError, match=r"blob-port.*TINYFLEET_BLOB_PORT"):
            service.start()


def test_a_configured_blob_port_is_used_and_not_kept(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = ServiceRuntime(_settings(tmp_path / "data", blob_port=port), hub=MemoryHubGateway())
    try:
        assert service.start().blob_url == f"http://127.0.0.1:{port}/blobs/"
    finally:
        service.stop()
    assert not (tmp_path / "data" / BLOB_PORT_FILE).exists()
