"""Where the TUF repositories live in the blob store, and the URLs devices fetch them from.

The image and director repositories publish through a `BlobRepositoryStore` under
`REPOSITORY_PREFIX`; the root anchors stay beside the keys (`TrustService._anchor`), outside the
store, so a tampered store is still detected. Devices get one read grant for the whole prefix
(`signed_prefix`): python-tuf joins file names onto the base URLs itself and the agent appends
`query` to every request (the desired twin's `repository.query`).

On Azure a grant covers a whole container (docs/decisions/0004-blob-store.md), so give the
repositories a container of their own: pass that store here, and drafts another one.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    `director_url` holds `{device_id}`; `query` is appended (after `?`) to every request.
    """

    image_url: str
    director_url: str
    targets_url: str
    query: str

    def director_url_for(self, device_id: str) -> str:
        """The director URL of `device_id`: its id as a safe path segment (`device_segment`)."""
        return self.director_url.replace("{device_id}", device_segment(device_id))


def publication_urls(
    blobs: BlobStore, ttl: timedelta, prefix: str = REPOSITORY_PREFIX
) -> PublicationUrls:
    """Fresh URLs (valid for `ttl`) to the repositories published under `prefix` of `blobs`.

    Raises BlobConfigError when the store cannot sign URLs (no signer or account key).
    """
    grant = blobs.signed_prefix(prefix, int(ttl.total_seconds()))
    base = grant.base_url
    return PublicationUrls(
        image_url=f"{base}image/metadata/",
        director_url=f"{base}director/devices/{{device_id}}/metadata/",
        targets_url=f"{base}image/targets/",
        query=grant.query,
    )
