"""Every IoT Hub device id gets its own director repository, published into the filesystem
blob store and verified by a device over signed URLs; ids that look like paths stay inside their
folder. One clock: the wall clock, which the device's TUF client reads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.simdevice import QueryFetcher
from service.blobs import BlobServer, FilesystemBlobStore
from service.engine import EngineConfig, SigningDirector
from service.releases import publication_urls
from service.storage import SqlStorage, upgrade
from signing.device import DeviceIdentity, DeviceVerifier
from signing.device_ids import device_segment
from tests.integration.releases.test_publication import KEY, TTL, install, publish_release
from tests.unit.releases._world import Clock, ReleaseWorld

IDS = [".", "..", "sensor:01", "dev@site", "_gw", "pump(3)", "a%2Fb", "x?y*", "a+b#c", ":" * 128]
NAMES = [
    "dot",
    "dotdot",
    "colon",
    "at",
    "underscore",
    "parens",
    "percent",
    "query-star",
    "plus-hash",
    "long",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReleaseWorld, Path]]:
    tmp = tmp_path_factory.mktemp("ids")
    url = f"sqlite:///{tmp / 'tinyfleet.db'}"
    upgrade(url)
    storage = SqlStorage(url)
    with BlobServer(KEY) as server:
        blobs = FilesystemBlobStore(tmp / "blobs", server.signer(), time.time)
        server.start(blobs)
        world = ReleaseWorld(tmp, blobs=blobs, storage=storage, clock=Clock(datetime.now(UTC)))
        publish_release(world.service)
        try:
            yield world, tmp / "blobs"
        finally:
            storage.close()


@pytest.mark.parametrize("device_id", IDS, ids=NAMES)
def test_a_device_with_any_hub_id_installs_its_assignment(
    served: tuple[ReleaseWorld, Path], device_id: str
) -> None:
    world, root = served
    director = SigningDirector(world.trust.director())
    director.assign(device_id, "mt3620", "r1", world.clock())
    urls = publication_urls(world.blobs, TTL)
    config = EngineConfig(urls.image_url, urls.director_url, urls.targets_url)
    assert config.director_url_for(device_id) == urls.director_url_for(device_id)
    verifier = DeviceVerifier(
        DeviceIdentity(device_id, "mt3620", ("m4-0", "m4-1")),
        world.tmp / "devices" / device_segment(device_id),
        image_root=world.trust.image().root_bytes(),
        director_root=world.trust.director().root_bytes(),
        fetcher=QueryFetcher(urls.query_for(device_id)),
        image_url=urls.image_url,
        director_url=config.director_url_for(device_id),
    )
    assert install(verifier, urls).release_id == "r1"

    folder = root / "repo" / "director" / "devices" / device_segment(device_id)
    assert (folder / "metadata" / "timestamp.json").is_file()
    assert folder.resolve().parent == (root / "repo" / "director" / "devices").resolve()
    assert device_id in world.trust.director().devices()
    assignment = world.trust.director().assignment(device_id)
    assert assignment is not None and assignment.release_id == "r1"
