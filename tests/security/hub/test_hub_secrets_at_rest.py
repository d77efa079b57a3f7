"""Another user of the machine reads the mock hub's files: each row is a file that holds or leads
to a secret (the iothubowner key, device keys, the CA key) and must be 0600, in a 0700 folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.hub import BackgroundHub, HubConfig, provision_device

PRIVATE = [
    ("hub-json-owner-key", "hub.json"),
    ("hub-database-device-keys", "hub.sqlite"),
    ("hub-database-wal", "hub.sqlite-wal"),
    ("hub-database-shm", "hub.sqlite-shm"),
    ("telemetry-feed", "feed.sqlite"),
    ("ca-key", "certs/ca.key"),
]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def hub_dir(tmp_path: Path) -> Iterator[Path]:
    old = os.umask(0o022)  # the usual umask: files would be world-readable by default
    try:
        data = tmp_path / "hub"
        config = HubConfig(data_dir=data, hostname="hub.local", mqtt_port=0, https_port=0)
        with BackgroundHub(config):
            provision_device(config, "dev-1")
            yield data
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", [n for _, n in PRIVATE], ids=[i for i, _ in PRIVATE])
def test_hub_files_are_private(hub_dir: Path, name: str) -> None:
    path = hub_dir / name
    assert path.exists(), f"{name} was not created"
    assert _mode(path) == 0o600


def test_the_hub_folder_is_private(hub_dir: Path) -> None:
    assert _mode(hub_dir) == 0o700


def test_files_left_world_readable_by_an_older_version_are_narrowed(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    config = HubConfig(data_dir=data, hostname="hub.local", mqtt_port=0, https_port=0)
    with BackgroundHub(config):
        pass
    for name in ("hub.sqlite", "hub.json"):
        os.chmod(data / name, 0o644)
    os.chmod(data, 0o755)
    with BackgroundHub(config):
        assert _mode(data) == 0o700
        assert _mode(data / "hub.sqlite") == 0o600 and _mode(data / "hub.json") == 0o600
