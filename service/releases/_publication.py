"""Where the TUF repositories live in the blob store, and the URLs devices fetch them from.

The image and director repositories publish through a `BlobRepositoryStore` under
`REPOSITORY_PREFIX`; the root anchors stay beside the keys (`TrustService._anchor`), outside the
store, so a tampered store is still detected. Each device gets one read grant
(`query_for(device_id)`, `signed_prefixes`) for the image repository and its own director folder,
never another device's: python-tuf joins file names onto the base URLs itself and the agent
appends the query to every request (the desired twin's `repository.query`). `query` alone
reaches the image repository only.

On Azure a grant covers a whole container (docs/decisions/0004-blob-store.md), so give the
repositories a container of their own: pass that store here, and drafts another one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from service.blobs import BlobRepositoryStore, BlobStore
from signing.device_ids import device_segment

__all__ = ["REPOSITORY_PREFIX", "PublicationUrls", "publication_urls", "repository_store"]

REPOSITORY_PREFIX = "repo/"


def repository_store(blobs: BlobStore, prefix: str = REPOSITORY_PREFIX) -> BlobRepositoryStore:
    """The store to give `TrustService(..., store=...)`: both repositories publish into it."""
    return BlobRepositoryStore(blobs, prefix)


@dataclass(frozen=True)
class PublicationUrls:
    """What `EngineConfig` and the desired twin's `repository` need.

    `director_url` holds `{device_id}`; a device appends `query_for(its id)` (after `?`) to
    every request; `query` grants the image repository only.
    """

    image_url: str
    director_url: str
    targets_url: str
    query: str
    device_grant: Callable[[str], str] | None = field(default=None, compare=False, repr=False)

    def query_for(self, device_id: str) -> str:
        """A fresh grant for the image repository and `device_id`'s director folder."""
        return self.device_grant(device_id) if self.device_grant is not None else self.query

    def director_url_for(self, device_id: str) -> str:
        """The director URL of `device_id`: its id as a safe path segment (`device_segment`)."""
        return self.director_url.replace("{device_id}", device_segment(device_id))


def publication_urls(
    blobs: BlobStore, ttl: timedelta, prefix: str = REPOSITORY_PREFIX
) -> PublicationUrls:
    """Fresh URLs (valid for `ttl`) to the repositories published under `prefix` of `blobs`.

    Raises BlobConfigError when the store cannot sign URLs (no signer or account key).
    """
    seconds = int(ttl.total_seconds())
    image = f"{prefix}image/"
    grant = blobs.signed_prefixes(prefix, [image], seconds)
    base = grant.base_url

    def device_grant(device_id: str) -> str:
        folder = f"{prefix}director/devices/{device_segment(device_id)}/"
        return blobs.signed_prefixes(prefix, [image, folder], seconds).query

    return PublicationUrls(
        image_url=f"{base}image/metadata/",
        director_url=f"{base}director/devices/{{device_id}}/metadata/",
        targets_url=f"{base}image/targets/",
        query=grant.query,
        device_grant=device_grant,
    )
