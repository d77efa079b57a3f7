"""Releases published into real blob stores and installed as a device would: the agent's
python-tuf fetcher and HTTP Range target source over the filesystem store's signed URLs (SQLite
storage), and over Azurite's SAS URLs, with the repositories in a container of their own.

The device checks expiry against the wall clock (python-tuf reads it itself), so every world here
signs on one clock that starts at the wall clock's now: the tests pass on any date."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from device_agent.target_source import HttpTargetSource, resumable
from infra.simdevice import QueryFetcher
from service.blobs import BlobServer, BlobStore, FilesystemBlobStore
from service.engine import EngineConfig, SigningDirector
from service.releases import (
    PublicationUrls,
    ReleaseService,
    ReleaseTrustError,
    publication_urls,
)
from service.storage import SqlStorage, upgrade
from signing import SigningError
from signing.device import DeviceIdentity, DeviceVerifier, VerifiedRelease
from signing.stream import VerifiedDigest
from tests.contract.blobs.conftest import Azurite
from tests.unit.releases._models import PREBUILT
from tests.unit.releases._world import Clock, ReleaseWorld, upload

KEY = b"r" * 32
TTL = timedelta(minutes=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ReleaseWorld, BlobServer]]:
    url = f"sqlite:///{tmp_path / 'tinyfleet.db'}"
    upgrade(url)
    storage = SqlStorage(url)
    with BlobServer(KEY) as server:
        blobs = FilesystemBlobStore(tmp_path / "blobs", server.signer(), time.time)
        server.start(blobs)
        try:
            yield (
                ReleaseWorld(tmp_path, blobs=blobs, storage=storage, clock=Clock.from_wall()),
                server,
            )
        finally:
            storage.close()


def publish_release(releases: ReleaseService, release_id: str = "r1", counter: int = 1) -> None:
    releases.create_draft(release_id, ["mt3620"], counter, "alice")
    upload(releases, release_id, "m4-0", "kws-v2.0.0")
    upload(releases, release_id, "m4-1", "vibration-v2.0.0")
    releases.publish(release_id, "alice")


def device(world: ReleaseWorld, urls: PublicationUrls, device_id: str = "dev-1") -> DeviceVerifier:
    """A device provisioned with the service's roots, reading only what `urls` reach."""
    return DeviceVerifier(
        DeviceIdentity(device_id, "mt3620", ("m4-0", "m4-1")),
        world.tmp / "devices" / device_id,
        image_root=world.trust.image().root_bytes(),
        director_root=world.trust.director().root_bytes(),
        fetcher=QueryFetcher(urls.query_for(device_id)),
        image_url=urls.image_url,
        director_url=urls.director_url_for(device_id),
    )


def install(verifier: DeviceVerifier, urls: PublicationUrls) -> VerifiedRelease:
    release = verifier.check()
    assert release is not None
    source = HttpTargetSource(urls.targets_url, urls.query)
    verdicts: dict[str, VerifiedDigest] = {}
    for target in release.targets:
        stream = target.verifier()
        for chunk in resumable(source, target.url_path(), target.length):
            stream.update(chunk)
        verdicts[target.path] = stream.finish()
    verifier.commit_install(release, verdicts)
    return release


def test_a_device_installs_a_published_release_over_signed_urls(
    served: tuple[ReleaseWorld, BlobServer],
) -> None:
    world, server = served
    publish_release(world.service)
    director = SigningDirector(world.trust.director())
    director.assign("dev-1", "mt3620", "r1", world.clock())
    urls = publication_urls(world.blobs, TTL)
    assert urls.image_url.startswith(server.url)
    EngineConfig(urls.image_url, urls.director_url, urls.targets_url)  # what the runtime wires

    release = install(device(world, urls), urls)
    assert release.release_id == "r1"
    assert {(t.core, t.fields.raw["modelId"]) for t in release.targets} == {
        ("m4-0", "kws"),
        ("m4-1", "vibration"),
    }
    for target in release.targets:
        name = Path(target.path).name.split(".", 2)[2]  # "<release>.<core>.<file>"
        assert target.length == (PREBUILT / name).stat().st_size
    assert world.service.get("r1").status == "published"


def test_the_grant_reaches_the_repositories_not_the_drafts(
    served: tuple[ReleaseWorld, BlobServer],
) -> None:
    world, _ = served
    world.service.create_draft("secret", ["mt3620"], 1, "alice")
    urls = publication_urls(world.blobs, TTL)
    base = urls.image_url.removesuffix("image/metadata/")
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{urls.image_url}1.root.json?{urls.query}").status_code == 200
        draft = base.replace("/repo/", "/drafts/") + "secret/draft.json"
        assert http.get(f"{draft}?{urls.query}").status_code == 403
        assert draft == world.blobs.signed_url("drafts/secret/draft.json", 60).split("?")[0]
        assert http.get(world.blobs.signed_url("drafts/secret/draft.json", 60)).status_code == 200


def test_a_new_assignment_reaches_the_device_through_the_blob_store(
    served: tuple[ReleaseWorld, BlobServer],
) -> None:
    world, _ = served
    publish_release(world.service, "r1", 1)
    publish_release(world.service, "r2", 2)
    director = SigningDirector(world.trust.director())
    urls = publication_urls(world.blobs, TTL)
    verifier = device(world, urls)
    for release_id in ("r1", "r2"):
        director.assign("dev-1", "mt3620", release_id, world.clock())
        assert install(verifier, urls).release_id == release_id
    assert verifier.check() is None


def test_tampering_with_the_published_store_is_detected(
    served: tuple[ReleaseWorld, BlobServer],
) -> None:
    world, _ = served
    publish_release(world.service, "r1")
    models = [p for p in world.blobs.list("repo/image/metadata/") if p.endswith("models.json")]
    latest = max(models, key=lambda p: int(p.rsplit("/", 1)[1].split(".")[0]))
    forged = b"".join(world.blobs.get(latest)).replace(b'"kws"', b'"kwz"')
    world.blobs.put(latest, [forged])
    with pytest.raises(SigningError):
        world.trust.image()
    world.service.create_draft("r2", ["mt3620"], 2, "alice")
    upload(world.service, "r2", "m4-0", "kws-v3.0.0")
    with pytest.raises(ReleaseTrustError):
        world.service.publish("r2", "alice")


def test_publication_on_azurite_with_a_repository_container(
    azurite: Azurite, tmp_path: Path
) -> None:
    drafts: BlobStore = azurite.store()
    repositories: BlobStore = azurite.store()
    world = ReleaseWorld(tmp_path, blobs=drafts, repo_blobs=repositories, clock=Clock.from_wall())
    publish_release(world.service)
    SigningDirector(world.trust.director()).assign("dev-1", "mt3620", "r1", world.clock())
    urls = publication_urls(repositories, TTL)
    assert "sig=" in urls.query and "/repo/" in urls.image_url
    assert install(device(world, urls), urls).release_id == "r1"
    assert drafts.list() == []
    restarted = world.new_service()
    assert restarted.get("r1").status == "published"
