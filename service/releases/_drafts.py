"""Drafts: releases still being assembled, kept as JSON documents in the blob store.

`drafts/<id>/draft.json` holds the draft; each admitted member's bytes sit beside it at
`drafts/<id>/<core>.<random>.bin`. Blob `put` replaces atomically, so a crash leaves the old
document or the new one; a member's bytes are written before the document that names them, so a
document never names missing bytes (a crash can only leave an unreferenced blob behind).

Invariants:
- A draft names at most one member per core, each admitted (every check passed).
- A member's `blob` path lies under its draft's folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from service.blobs import BlobError, BlobNotFound, BlobStore
from service.releases._errors import AdmissionCheck, ReleaseUnavailableError

__all__ = ["DRAFTS_PREFIX", "Draft", "DraftMember", "DraftStore"]

DRAFTS_PREFIX = "drafts/"
_DOCUMENT = "draft.json"


@dataclass(frozen=True)
class DraftMember:
    core: str
    kind: str
    target_path: str
    blob: str
    length: int
    sha256: str
    custom: Mapping[str, Any]
    admission: tuple[AdmissionCheck, ...]
    uploaded_at: datetime
    uploaded_by: str
    # A model's score direction, read from its sidecar at upload (where the build-time quality
    # block that tells an anomaly detector from a classifier is still present); the health gate
    # judges the score that way. Kept with the release row, not signed: devices do not need it.
    score_direction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "kind": self.kind,
            "targetPath": self.target_path,
            "blob": self.blob,
            "length": self.length,
            "sha256": self.sha256,
            "custom": dict(self.custom),
            "admission": [c.to_dict() for c in self.admission],
            "uploadedAt": self.uploaded_at.isoformat(),
            "uploadedBy": self.uploaded_by,
            "scoreDirection": self.score_direction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DraftMember:
        return cls(
            core=data["core"],
            kind=data["kind"],
            target_path=data["targetPath"],
            blob=data["blob"],
            length=int(data["length"]),
            sha256=data["sha256"],
            custom=data["custom"],
            admission=tuple(AdmissionCheck.from_dict(c) for c in data["admission"]),
            uploaded_at=datetime.fromisoformat(data["uploadedAt"]),
            uploaded_by=data["uploadedBy"],
            score_direction=data.get("scoreDirection"),
        )


@dataclass(frozen=True)
class Draft:
    id: str
    counter: int
    hardware_ids: tuple[str, ...]
    description: str
    created_at: datetime
    created_by: str
    members: Mapping[str, DraftMember] = field(default_factory=dict)

    def with_member(self, member: DraftMember) -> Draft:
        return replace(self, members={**self.members, member.core: member})

    def to_json(self) -> bytes:
        doc = {
            "id": self.id,
            "counter": self.counter,
            "hardwareIds": list(self.hardware_ids),
            "description": self.description,
            "createdAt": self.created_at.isoformat(),
            "createdBy": self.created_by,
            "members": [self.members[core].to_dict() for core in sorted(self.members)],
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Draft:
        doc = json.loads(raw)
        members = (DraftMember.from_dict(m) for m in doc["members"])
        return cls(
            id=doc["id"],
            counter=int(doc["counter"]),
            hardware_ids=tuple(doc["hardwareIds"]),
            description=doc["description"],
            created_at=datetime.fromisoformat(doc["createdAt"]),
            created_by=doc["createdBy"],
            members={m.core: m for m in members},
        )


class DraftStore:
    """Drafts in a blob store under `prefix`; blob failures become ReleaseUnavailableError."""

    def __init__(self, blobs: BlobStore, prefix: str = DRAFTS_PREFIX) -> None:
        self.blobs = blobs
        self.prefix = prefix

    def folder(self, release_id: str) -> str:
        return f"{self.prefix}{release_id}/"

    def _document(self, release_id: str) -> str:
        return f"{self.folder(release_id)}{_DOCUMENT}"

    def load(self, release_id: str) -> Draft | None:
        try:
            raw = b"".join(self.blobs.get(self._document(release_id)))
        except BlobNotFound:
            return None
        except BlobError as exc:
            raise ReleaseUnavailableError(f"reading draft {release_id}: {exc}") from exc
        try:
            return Draft.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise ReleaseUnavailableError(f"draft {release_id} is unreadable: {exc!r}") from exc

    def save(self, draft: Draft) -> None:
        try:
            self.blobs.put(self._document(draft.id), [draft.to_json()])
        except BlobError as exc:
            raise ReleaseUnavailableError(f"saving draft {draft.id}: {exc}") from exc

    def ids(self) -> list[str]:
        try:
            paths = self.blobs.list(self.prefix)
        except BlobError as exc:
            raise ReleaseUnavailableError(f"listing drafts: {exc}") from exc
        suffix = f"/{_DOCUMENT}"
        return sorted(
            p[len(self.prefix) : -len(suffix)]
            for p in paths
            if p.endswith(suffix) and "/" not in p[len(self.prefix) : -len(suffix)]
        )

    def delete_blob(self, path: str) -> None:
        """Best effort: a leftover blob is garbage, never a wrong answer."""
        with contextlib.suppress(BlobError):
            self.blobs.delete(path)

    def delete(self, release_id: str) -> None:
        """Remove the draft document first (it is what makes a draft exist), then its blobs."""
        self.delete_blob(self._document(release_id))
        try:
            leftovers = self.blobs.list(self.folder(release_id))
        except BlobError:
            return
        for path in leftovers:
            self.delete_blob(path)
