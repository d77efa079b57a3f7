"""TUF repositories published into each blob store, verified by a device over signed URLs.

The device is the real `signing.device.DeviceVerifier` (python-tuf's Updater) with the agent's
`QueryFetcher`: python-tuf joins file names onto base URLs itself, so the grant is one signed
query for the whole repository prefix (a container SAS on Azure), carried to the device in the
desired twin's `repository.query`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from infra.simdevice import QueryFetcher
from service.blobs import BlobRepositoryStore
from signing import FetchError
from signing.device import DeviceIdentity, DeviceVerifier, VerifiedRelease
from signing.director import DirectorRepository
from signing.image_repo import DELEGATED_ROLES, ImageRepository
from signing.keys import MemoryKeyRing
from signing.store import StoreNotFound
from signing.stream import VerifiedDigest
from tests.contract.blobs.conftest import Served
from tests.signing_world import model_custom

PREFIX = "tuf/"


def publish(store: BlobRepositoryStore, tmp: Path) -> tuple[ImageRepository, DirectorRepository]:
    now = datetime.now(UTC)
    ring = MemoryKeyRing()
    for repo in ("image", "director"):
        ring.add(repo, "root")
    for role in ("targets", "snapshot", "timestamp", *DELEGATED_ROLES):
        ring.add("image", role)
    for role in ("targets", "snapshot", "timestamp"):
        ring.add("director", role)
    image = ImageRepository.create(store, ring, now)
    director = DirectorRepository.create(store, ring, image, now)
    model = tmp / "kws.tflite"
    model.write_bytes(bytes(range(256)) * 40)
    path = "models/kws/kws-v1.0.0.tflite"
    image.add_artifact(path, model, model_custom("kws", "1.0.0"), now)
    image.add_release("r1", 1, ["mt3620"], [("m4-0", path), ("m4-1", path)], now)
    image.commit(now)
    director.assign("dev-1", "mt3620", "r1", now)
    return image, director


def device(
    tmp: Path, image: ImageRepository, director: DirectorRepository, base: str, query: str
) -> DeviceVerifier:
    return DeviceVerifier(
        DeviceIdentity("dev-1", "mt3620"),
        tmp / "device",
        image_root=image.root_bytes(),
        director_root=director.root_bytes(),
        fetcher=QueryFetcher(query),
        image_url=f"{base}image/metadata/",
        director_url=f"{base}{director.metadata_prefix('dev-1')}",
    )


def download(release: VerifiedRelease, base: str, query: str) -> dict[str, VerifiedDigest]:
    verdicts = {}
    with httpx.Client(timeout=10) as http:
        for target in release.targets:
            verifier = target.verifier()
            url = f"{base}image/targets/{target.url_path()}?{query}"
            with http.stream("GET", url) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes(4096):
                    verifier.update(chunk)
            verdicts[target.path] = verifier.finish()
    return verdicts


def test_a_device_verifies_a_release_published_to_the_blob_store(
    served: Served, tmp_path: Path
) -> None:
    repo_store = BlobRepositoryStore(served.store, PREFIX)
    image, director = publish(repo_store, tmp_path)
    assert "image/metadata/1.root.json" in repo_store.list("image/metadata/")
    with pytest.raises(StoreNotFound):
        repo_store.get("image/metadata/99.root.json")

    grant = served.store.signed_prefix(PREFIX, 600)
    verifier = device(tmp_path, image, director, grant.base_url, grant.query)
    release = verifier.check()
    assert release is not None and release.release_id == "r1"
    assert {t.core for t in release.targets} == {"m4-0", "m4-1"}
    verifier.commit_install(release, download(release, grant.base_url, grant.query))
    assert verifier.installed().release_id == "r1"
    assert verifier.check() is None  # nothing new


def test_a_device_with_a_forged_grant_cannot_fetch(served: Served, tmp_path: Path) -> None:
    image, director = publish(BlobRepositoryStore(served.store, PREFIX), tmp_path)
    grant = served.store.signed_prefix(PREFIX, 600)
    forged = grant.query.replace("sig=", "sig=00")
    with pytest.raises(FetchError):
        device(tmp_path, image, director, grant.base_url, forged).check()
