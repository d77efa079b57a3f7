"""`signed_prefixes` on every blob adapter: the folders granted are readable under the base URL,
a prefix outside the base is refused; locally nothing else under the base is readable (Azure's
grant is its container, see `service/blobs/_azure.py`)."""

from __future__ import annotations

import httpx
import pytest

from service.blobs import BlobStore, InvalidBlobPath
from tests.contract.blobs.conftest import Served


def test_signed_prefixes_grants_the_folders_under_the_base(served: Served) -> None:
    store: BlobStore = served.store
    store.put("repo/image/metadata/1.root.json", [b"image"])
    store.put("repo/director/devices/a/metadata/timestamp.json", [b"a"])
    store.put("repo/director/devices/b/metadata/timestamp.json", [b"b"])
    grant = store.signed_prefixes("repo/", ["repo/image/", "repo/director/devices/a/"], 60)
    with httpx.Client(timeout=10) as http:
        assert http.get(grant.url("image/metadata/1.root.json")).content == b"image"
        assert http.get(grant.url("director/devices/a/metadata/timestamp.json")).content == b"a"
        assert http.get(grant.url("image/metadata/2.root.json")).status_code == 404
        other = http.get(grant.url("director/devices/b/metadata/timestamp.json"))
        assert other.status_code == (200 if served.kind == "azurite" else 403)


@pytest.mark.parametrize(
    "prefixes",
    [["drafts/"], ["repo"], [], ["repo/../drafts/"]],
    ids=["outside-base", "not-a-folder", "none", "traversal"],
)
def test_signed_prefixes_refuses_prefixes_outside_the_base(
    served: Served, prefixes: list[str]
) -> None:
    with pytest.raises(InvalidBlobPath):
        served.store.signed_prefixes("repo/", prefixes, 60)
