"""Every IoT Hub device id gets its own director repository, published into the filesystem
blob store and verified by a device over signed URLs; ids that look like paths stay inside their
folder. One clock: the wall clock, which the device's TUF client reads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_agent.protocol import COMPONENT
from infra.simdevice import QueryFetcher
from service.blobs import BlobServer, FilesystemBlobStore
from service.engine import Dispatcher, EngineConfig, MemoryNotifier, SigningDirector
from service.hubgateway import MemoryHubGateway
from service.releases import PublicationUrls, publication_urls
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
def test_the_dispatcher_offers_any_hub_id_a_release_its_device_verifies(
    served: tuple[ReleaseWorld, Path], device_id: str
) -> None:
    """Outbox -> director (blob store) -> desired twin -> the device's own URLs and grant."""
    world, root = served
    urls = publication_urls(world.blobs, TTL)
    config = EngineConfig(
        urls.image_url,
        urls.director_url,
        urls.targets_url,
        query=urls.query,
        device_query=urls.query_for,
    )
    hub = MemoryHubGateway(clock=world.clock)
    hub.register_device(device_id)
    director = SigningDirector(world.trust.director())
    dispatcher = Dispatcher(world.storage, hub, director, MemoryNotifier(), config)
    meta = {"epoch": 1, "version": 1, "origin": "ro-ids"}
    workflow = "ro-ids.r1.1"
    with world.storage.begin() as uow:
        uow.outbox.append_many(
            [
                (
                    "WriteDirector",
                    {
                        "device_id": device_id,
                        "release_id": "r1",
                        "hardware_id": "mt3620",
                        "position": 0,
                        **meta,
                    },
                ),
                (
                    "OfferRelease",
                    {
                        "device_id": device_id,
                        "release_id": "r1",
                        "workflow_id": workflow,
                        "position": 1,
                        **meta,
                    },
                ),
            ],
            world.clock(),
        )
    assert dispatcher.run_once(world.clock()) == 2
    with world.storage.begin(readonly=True) as uow:
        assert uow.outbox.failing() == []

    repository = hub.desired(device_id)[COMPONENT]["service"]["repository"]
    offered = PublicationUrls(
        repository["imageUrl"], urls.director_url, repository["targetsUrl"], repository["query"]
    )
    verifier = DeviceVerifier(
        DeviceIdentity(device_id, "mt3620", ("m4-0", "m4-1")),
        world.tmp / "offered" / device_segment(device_id),
        image_root=world.trust.image().root_bytes(),
        director_root=world.trust.director().root_bytes(),
        fetcher=QueryFetcher(repository["query"]),
        image_url=repository["imageUrl"],
        director_url=repository["directorUrl"],
    )
    assert install(verifier, offered).release_id == "r1"

    folder = root / "repo" / "director" / "devices" / device_segment(device_id)
    assert (folder / "metadata" / "timestamp.json").is_file()
    assert folder.resolve().parent == (root / "repo" / "director" / "devices").resolve()
    assert device_id in world.trust.director().devices()
    assignment = world.trust.director().assignment(device_id)
    assert assignment is not None and assignment.release_id == "r1"
