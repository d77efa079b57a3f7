"""The local blob server's refusals, one row per attack, over the memory and filesystem stores."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.blobs import (
    BlobConfigError,
    BlobServer,
    FilesystemBlobStore,
    InvalidBlobPath,
    MemoryBlobStore,
    UrlSigner,
)
from service.blobs._errors import RangeNotSatisfiable
from service.blobs._server import parse_range
from tests.contract.blobs.conftest import KEY, Served

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture(params=["memory", "filesystem"])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A locally served store whose clock the test sets (for expiry)."""
    now = [1_800_000_000.0]

    def clock() -> float:
        return now[0]

    with BlobServer(KEY, clock=clock) as server:
        store = (
            MemoryBlobStore(server.signer(), clock)
            if request.param == "memory"
            else FilesystemBlobStore(tmp_path / "blobs", server.signer(), clock)
        )
        server.start(store)
        yield Served(store, request.param, now)


def raw(url: str, target: str | None = None, method: str = "GET", **headers: str) -> Response:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        path = target if target is not None else f"{parts.path}?{parts.query}"
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _query(url: str) -> str:
    return urlsplit(url).query


Attack = Callable[[Served], Response]


def _forged(s: Served) -> Response:
    url = s.store.signed_url("a/blob", 60)
    return raw(url[:-8] + "deadbeef")


def _other_blob(s: Served) -> Response:
    url = s.store.signed_url("a/other", 60)
    return raw(url.replace("a/other", "a/blob"))


def _no_signature(s: Served) -> Response:
    return raw(s.store.signed_url("a/blob", 60).split("?")[0] + "?")


def _expired(s: Served) -> Response:
    url = s.store.signed_url("a/blob", 60)
    s.now[0] += 60
    return raw(url)


def _extended(s: Served) -> Response:
    url = s.store.signed_url("a/blob", 60)
    exp = int(s.now[0]) + 60
    return raw(url.replace(f"exp={exp}", f"exp={exp + 86400}"))


def _outside_prefix(s: Served) -> Response:
    return raw(s.store.signed_prefix("b/", 60).url("../a/blob"))


def _prefix_swapped(s: Served) -> Response:
    grant = s.store.signed_prefix("b/", 60)
    return raw(grant.url("x").replace("scope=b%2F", "scope=a%2F").replace("/b/x", "/a/blob"))


def _prefix_grant_on_other_path(s: Served) -> Response:
    return raw(s.store.signed_prefix("b/", 60).url("x").replace("/b/x", "/a/blob"))


def _blob_sig_as_scope(s: Served) -> Response:
    url = s.store.signed_url("a/blob", 60)
    return raw(url + "&scope=a%2F")


def _dot_dot(s: Served) -> Response:
    q = _query(s.store.signed_url("a/blob", 60))
    return raw(s.store.signed_url("a/blob", 60), f"/blobs/../../etc/passwd?{q}")


def _encoded_dot_dot(s: Served) -> Response:
    q = _query(s.store.signed_url("a/blob", 60))
    return raw(s.store.signed_url("a/blob", 60), f"/blobs/a/%2e%2e/%2e%2e/etc/passwd?{q}")


def _listing(s: Served) -> Response:
    grant = s.store.signed_prefix("a/", 60)
    return raw(grant.url(""))


def _root_listing(s: Served) -> Response:
    return raw(s.store.signed_url("a/blob", 60), "/blobs/")


def _outside_route(s: Served) -> Response:
    return raw(s.store.signed_url("a/blob", 60), "/a/blob")


def _post(s: Served) -> Response:
    return raw(s.store.signed_url("a/blob", 60), method="POST")


def _put(s: Served) -> Response:
    return raw(s.store.signed_url("a/blob", 60), method="PUT")


ATTACKS: list[tuple[str, Attack, int]] = [
    ("forged-signature", _forged, 403),
    ("signature-of-another-blob", _other_blob, 403),
    ("no-signature", _no_signature, 403),
    ("expired", _expired, 403),
    ("expiry-extended", _extended, 403),
    ("prefix-grant-outside-its-prefix", _outside_prefix, 400),
    ("prefix-grant-scope-swapped", _prefix_swapped, 403),
    ("prefix-grant-on-another-path", _prefix_grant_on_other_path, 403),
    ("blob-signature-as-prefix-grant", _blob_sig_as_scope, 403),
    ("dot-dot-traversal", _dot_dot, 400),
    ("encoded-dot-dot-traversal", _encoded_dot_dot, 400),
    ("folder-listing", _listing, 400),
    ("root-listing", _root_listing, 400),
    ("outside-the-route", _outside_route, 404),
    ("post", _post, 405),
    ("put", _put, 405),
]


@pytest.mark.parametrize(
    ("attack", "status"), [(a, s) for _, a, s in ATTACKS], ids=[n for n, _, _ in ATTACKS]
)
def test_attacks_are_refused(local: Served, attack: Attack, status: int) -> None:
    local.store.put("a/blob", [b"private bytes"])
    local.store.put("a/other", [b"other"])
    local.store.put("b/x", [b"x"])
    code, _headers, body = attack(local)
    assert code == status
    assert b"private bytes" not in body


def test_a_url_works_until_its_expiry(local: Served) -> None:
    local.store.put("a/blob", [b"bytes"])
    url = local.store.signed_url("a/blob", 60)
    local.now[0] += 59
    assert raw(url)[0] == 200
    local.now[0] += 1
    assert raw(url)[0] == 403


def test_missing_blob_and_unsatisfiable_range(local: Served) -> None:
    assert raw(local.store.signed_url("a/none", 60))[0] == 404
    local.store.put("a/blob", [b"0123456789"])
    status, headers, _ = raw(local.store.signed_url("a/blob", 60), Range="bytes=10-")
    assert (status, headers["Content-Range"]) == (416, "bytes */10")
    status, headers, body = raw(local.store.signed_url("a/blob", 60), Range="bytes=-3")
    assert (status, headers["Content-Range"], body) == (206, "bytes 7-9/10", b"789")
    status, _, body = raw(local.store.signed_url("a/blob", 60), Range="bytes=0-1,4-5")
    assert (status, body) == (200, b"0123456789")  # multi-range: ignored, whole blob


RANGES = [
    ("none", None, 10, None),
    ("first-bytes", "bytes=0-3", 10, (0, 4)),
    ("open-ended", "bytes=4-", 10, (4, 10)),
    ("last-beyond-end", "bytes=8-100", 10, (8, 10)),
    ("suffix", "bytes=-4", 10, (6, 10)),
    ("suffix-longer-than-blob", "bytes=-40", 10, (0, 10)),
    ("reversed", "bytes=5-2", 10, None),
    ("other-unit", "items=0-1", 10, None),
    ("multi-range", "bytes=0-1,3-4", 10, None),
    ("garbage", "bytes=abc", 10, None),
]


@pytest.mark.parametrize(
    ("header", "size", "expected"), [r[1:] for r in RANGES], ids=[r[0] for r in RANGES]
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    ["bytes=10-", "bytes=-0", "bytes=99-100"],
    ids=["start-at-end", "empty-suffix", "start-past-end"],
)
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 10)


def test_filesystem_refuses_symlinks_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store = FilesystemBlobStore(tmp_path / "root")
    (tmp_path / "root" / "link").symlink_to(outside)
    with pytest.raises(InvalidBlobPath):
        store.get("link/secret")
    with pytest.raises(InvalidBlobPath):
        store.put(".~reserved", [b"x"])


def test_signing_configuration_is_checked() -> None:
    with pytest.raises(BlobConfigError):
        UrlSigner(b"short", "http://x/blobs/")
    with pytest.raises(BlobConfigError):
        UrlSigner(KEY, "http://x/blobs")
    with pytest.raises(BlobConfigError):
        UrlSigner(KEY, "http://x/blobs/").sign_blob("a", 0, 8 * 24 * 3600)
    with pytest.raises(BlobConfigError):
        MemoryBlobStore().signed_url("a", 60)  # not served: no signer


def test_filesystem_leftovers_and_file_folder_clashes(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "root")
    store.put("a/blob", [b"x"])
    # What a crash in the middle of a put leaves behind is never listed nor served.
    (tmp_path / "root" / "a" / ".~blob.0123.partial").write_bytes(b"half")
    assert store.list("") == ["a/blob"]
    with pytest.raises(InvalidBlobPath):
        store.put("a/blob/child", [b"y"])  # a file cannot also be a folder on disk
    with pytest.raises(InvalidBlobPath):
        store.put("a", [b"y"])
    assert store.list("") == ["a/blob"] and b"".join(store.get("a/blob")) == b"x"
