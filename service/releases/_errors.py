"""Exceptions of the release service, split by who must act, and one admission check's result.

ReleaseError
├── AdmissionError          the uploader: the artifact failed admission (`checks` says which, with
│                           the numbers); nothing was recorded
├── ReleaseInvalidError     the caller: a malformed request (unknown core, bad id, bad sidecar JSON)
├── ReleaseNotFoundError    no draft or published release with that id
├── ReleaseConflictError    the id exists already, or the release is published (immutable)
├── ReleaseTrustError       the operator: the published repository fails verification from the
│                           service's anchors (tampered store), or the signing keys are unusable
└── ReleaseUnavailableError nobody yet: the blob store, storage or signing failed; retry later
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AdmissionCheck",
    "AdmissionError",
    "ReleaseConflictError",
    "ReleaseError",
    "ReleaseInvalidError",
    "ReleaseNotFoundError",
    "ReleaseTrustError",
    "ReleaseUnavailableError",
]


@dataclass(frozen=True)
class AdmissionCheck:
    """One named admission check; `detail` carries the numbers behind the verdict."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdmissionCheck:
        return cls(str(data["name"]), bool(data["ok"]), str(data["detail"]))


class ReleaseError(Exception):
    """Root of every error the release service raises."""


class AdmissionError(ReleaseError):
    def __init__(self, subject: str, checks: list[AdmissionCheck]) -> None:
        failed = [c for c in checks if not c.ok]
        names = ", ".join(f"{c.name} ({c.detail})" for c in failed) or "no check ran"
        super().__init__(f"{subject} refused: {names}")
        self.checks = checks

    @property
    def failed(self) -> list[AdmissionCheck]:
        return [c for c in self.checks if not c.ok]


class ReleaseInvalidError(ReleaseError):
    pass


class ReleaseNotFoundError(ReleaseError):
    def __init__(self, release_id: str) -> None:
        super().__init__(f"no release {release_id!r}")
        self.release_id = release_id


class ReleaseConflictError(ReleaseError):
    pass


class ReleaseTrustError(ReleaseError):
    pass


class ReleaseUnavailableError(ReleaseError):
    pass
