"""What the release service returns: release summaries shaped like the API contract's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.releases._drafts import Draft, DraftMember
from service.releases._errors import AdmissionCheck
from service.storage import Release

__all__ = [
    "MemberView",
    "ReleasePage",
    "ReleaseView",
    "draft_view",
    "member_view",
    "published_view",
    "row_details",
]


@dataclass(frozen=True)
class MemberView:
    core: str
    path: str
    kind: str
    model_id: str | None
    version: str | None
    length: int
    sha256: str
    admission: tuple[AdmissionCheck, ...]

    def to_dict(self, *, admission: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "core": self.core,
            "path": self.path,
            "kind": self.kind,
            "model_id": self.model_id,
            "version": self.version,
            "length": self.length,
            "sha256": self.sha256,
        }
        if admission:
            data["admission"] = [c.to_dict() for c in self.admission]
        return data


@dataclass(frozen=True)
class ReleaseView:
    id: str
    status: str  # "draft" | "published"
    counter: int
    hardware_ids: tuple[str, ...]
    description: str
    members: tuple[MemberView, ...]
    created_at: datetime
    created_by: str

    def to_dict(self, *, admission: bool = True) -> dict[str, Any]:
        """The contract's summary; with `admission`, each member carries its checks."""
        return {
            "id": self.id,
            "status": self.status,
            "counter": self.counter,
            "hardware_ids": list(self.hardware_ids),
            "description": self.description,
            "members": [m.to_dict(admission=admission) for m in self.members],
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class ReleasePage:
    items: list[ReleaseView]
    next_after: str | None


def _model_fields(custom: Mapping[str, Any]) -> tuple[str | None, str | None]:
    model_id = custom.get("modelId") if custom.get("kind") == "model" else None
    version = custom.get("version")
    return (
        model_id if isinstance(model_id, str) else None,
        version if isinstance(version, str) else None,
    )


def member_view(member: DraftMember) -> MemberView:
    model_id, version = _model_fields(member.custom)
    return MemberView(
        member.core,
        member.target_path,
        member.kind,
        model_id,
        version,
        member.length,
        member.sha256,
        member.admission,
    )


def draft_view(draft: Draft) -> ReleaseView:
    return ReleaseView(
        draft.id,
        "draft",
        draft.counter,
        draft.hardware_ids,
        draft.description,
        tuple(member_view(draft.members[c]) for c in sorted(draft.members)),
        draft.created_at,
        draft.created_by,
    )


def row_details(draft: Draft) -> dict[str, Any]:
    """What the storage row keeps beside the signed manifest (which devices never see)."""
    return {
        "description": draft.description,
        "details": {
            core: {
                "modelId": _model_fields(m.custom)[0],
                "version": _model_fields(m.custom)[1],
                "admission": [c.to_dict() for c in m.admission],
                "scoreDirection": m.score_direction,
            }
            for core, m in draft.members.items()
        },
    }


def published_view(row: Release) -> ReleaseView:
    manifest = row.manifest
    details = manifest.get("details") or {}
    members = []
    for item in manifest.get("members") or []:
        extra = details.get(item.get("core"), {})
        members.append(
            MemberView(
                core=item["core"],
                path=item["path"],
                kind=item["kind"],
                model_id=extra.get("modelId"),
                version=extra.get("version"),
                length=int(item["length"]),
                sha256=item["sha256"],
                admission=tuple(AdmissionCheck.from_dict(c) for c in extra.get("admission", [])),
            )
        )
    return ReleaseView(
        row.id,
        "published",
        row.counter,
        row.hardware_ids,
        str(manifest.get("description", "")),
        tuple(members),
        row.created_at,
        row.created_by,
    )
