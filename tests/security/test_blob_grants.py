"""A device's blob grant reads the image repository and its own director folder, nothing else:
not another device's director metadata (however alike their ids), not the drafts, not a forged
or widened scope. Over the real blob server and filesystem store, with the URLs devices get."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import pytest

from service.blobs import BlobServer, FilesystemBlobStore
from service.releases import PublicationUrls, publication_urls
from signing.device_ids import device_segment

KEY = b"g" * 32
DEVICES = ["dev-1", "dev-10", "dev-2", "..", ".", "a%2Fb", "x?y*"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PublicationUrls, str]]:
    with BlobServer(KEY) as server:
        blobs = FilesystemBlobStore(tmp_path_factory.mktemp("grants"), server.signer(), time.time)
        server.start(blobs)
        blobs.put("repo/image/metadata/1.root.json", [b"image root"])
        blobs.put("repo/image/targets/r1.m4-0.kws.tflite", [b"model"])
        blobs.put("repo/director/root/metadata/1.root.json", [b"director root"])
        blobs.put("drafts/r2/draft.json", [b"draft"])
        for device_id in DEVICES:
            folder = f"repo/director/devices/{device_segment(device_id)}/metadata/"
            blobs.put(folder + "timestamp.json", [device_id.encode()])
        urls = publication_urls(blobs, timedelta(minutes=10))
        yield urls, urls.image_url.removesuffix("image/metadata/")


def _get(url: str, query: str) -> httpx.Response:
    return httpx.get(f"{url}?{query}", timeout=10)


def _director(urls: PublicationUrls, device_id: str) -> str:
    return urls.director_url_for(device_id) + "timestamp.json"


@pytest.mark.parametrize(
    "device_id", DEVICES, ids=["dev-1", "dev-10", "dev-2", "dotdot", "dot", "percent", "query-star"]
)
def test_a_device_reads_its_own_director_folder_and_the_image_repository(
    served: tuple[PublicationUrls, str], device_id: str
) -> None:
    urls, _ = served
    query = urls.query_for(device_id)
    own = _get(_director(urls, device_id), query)
    assert own.status_code == 200 and own.content == device_id.encode()
    assert _get(urls.image_url + "1.root.json", query).status_code == 200
    assert _get(urls.targets_url + "r1.m4-0.kws.tflite", query).status_code == 200


# (the device whose grant is used, what it tries to read)
ATTACKS = [
    ("dev-1", lambda u, b: _director(u, "dev-2")),
    ("dev-1", lambda u, b: _director(u, "dev-10")),  # a longer id with the same start
    ("dev-10", lambda u, b: _director(u, "dev-1")),
    ("..", lambda u, b: _director(u, "dev-1")),
    (".", lambda u, b: _director(u, "..")),
    ("a%2Fb", lambda u, b: _director(u, "x?y*")),
    ("dev-1", lambda u, b: b + "director/devices/dev-1/../dev-2/metadata/timestamp.json"),
    ("dev-1", lambda u, b: b + "director/devices/dev-1/%2e%2e/dev-2/metadata/timestamp.json"),
    ("dev-1", lambda u, b: b + "director/root/metadata/1.root.json"),
    ("dev-1", lambda u, b: b.replace("/repo/", "/drafts/") + "r2/draft.json"),
]
ATTACK_IDS = [
    "another-device",
    "id-prefix-longer",
    "id-prefix-shorter",
    "dotdot-device-reads-another",
    "dot-device-reads-dotdot",
    "percent-device-reads-another",
    "dotdot-in-path",
    "encoded-dotdot-in-path",
    "director-root-folder",
    "drafts",
]


@pytest.mark.parametrize(("device_id", "target"), ATTACKS, ids=ATTACK_IDS)
def test_a_device_grant_reads_nothing_outside_its_folders(
    served: tuple[PublicationUrls, str], device_id: str, target: object
) -> None:
    urls, base = served
    url = target(urls, base)  # type: ignore[operator]
    assert _get(url, urls.query_for(device_id)).status_code in (400, 403, 404)
    if "draft" not in url and ".." not in url and "%2e" not in url and "root/" not in url:
        victim = next(d for d in DEVICES if url == _director(urls, d))
        assert _get(url, urls.query_for(victim)).status_code == 200  # it exists: a real refusal


def _forge(query: str, **changes: str | None) -> str:
    params = dict(parse_qsl(query, keep_blank_values=True))
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return urlencode(params, quote_via=quote)


FORGERIES = [
    {"scopes": "repo/image/\nrepo/director/devices/dev-1/\nrepo/director/devices/dev-2/"},
    {"scopes": "repo/"},
    {"scopes": "repo/image/\n"},
    {"scope": "repo/"},
    {"scopes": None, "scope": "repo/image/\nrepo/director/devices/dev-1/"},
    {"exp": "99999999999"},
]


@pytest.mark.parametrize(
    "changes",
    FORGERIES,
    ids=[
        "add-a-device",
        "widen-to-repo",
        "empty-scope",
        "scope-beside-scopes",
        "scopes-as-scope",
        "later-expiry",
    ],
)
def test_a_forged_or_widened_grant_is_refused(
    served: tuple[PublicationUrls, str], changes: dict[str, str | None]
) -> None:
    urls, _ = served
    forged = _forge(urls.query_for("dev-1"), **changes)
    assert _get(_director(urls, "dev-2"), forged).status_code == 403
    assert _get(_director(urls, "dev-1"), forged).status_code == 403


def test_the_shared_query_reads_the_image_repository_only(
    served: tuple[PublicationUrls, str],
) -> None:
    urls, _ = served
    assert _get(urls.image_url + "1.root.json", urls.query).status_code == 200
    assert _get(_director(urls, "dev-1"), urls.query).status_code == 403
