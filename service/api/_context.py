"""What the routes work with: one `ApiContext`, built by the composition root (the runtime or a
test) and handed to `create_app`. Optional parts are None when the service runs without them
(no hub: no registry sync; no release service: release routes answer 503 `unavailable`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from service.engine import Engine
from service.hubgateway import HubGateway
from service.releases import MAX_UPLOAD_BYTES, MemberView, ReleasePage, ReleaseView
from service.storage import Storage

__all__ = ["ApiContext", "ApiLimits", "ReleasePort", "utc_now"]

# The multipart framing and the metadata form field (64 KiB at most) around an artifact.
_UPLOAD_OVERHEAD = 128 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApiLimits:
    """Request body caps, in bytes, and how many uploads may stream in at once (each spools up
    to `max_upload_body` to disk and hashes it: the bound keeps a burst of uploads from filling
    the disk or starving the other requests)."""

    max_json_body: int = 1024 * 1024
    max_upload_body: int = MAX_UPLOAD_BYTES + _UPLOAD_OVERHEAD
    max_concurrent_uploads: int = 4

    def __post_init__(self) -> None:
        if self.max_json_body < 1024 or self.max_upload_body < 1024:
            raise ValueError("body limits below 1 KiB would refuse ordinary requests")
        if not 1 <= self.max_concurrent_uploads <= 64:
            raise ValueError("max_concurrent_uploads must be between 1 and 64")


class ReleasePort(Protocol):
    """The release service the routes call (`service.releases.ReleaseService`)."""

    def create_draft(
        self,
        release_id: str,
        hardware_ids: Sequence[str],
        counter: int,
        actor: str,
        description: str = "",
    ) -> ReleaseView: ...

    def add_artifact(
        self,
        release_id: str,
        core: str,
        chunks: Iterable[bytes],
        metadata: Mapping[str, Any],
        actor: str,
    ) -> MemberView: ...

    def publish(self, release_id: str, actor: str) -> ReleaseView: ...

    def get(self, release_id: str) -> ReleaseView: ...

    def list(self, after: str | None = None, limit: int = 100) -> ReleasePage: ...


@dataclass
class ApiContext:
    storage: Storage
    engine: Engine | None = None
    releases: ReleasePort | None = None
    telemetry: Any | None = None  # the telemetry store (its router reads it)
    hub: HubGateway | None = None
    clock: Callable[[], datetime] = utc_now
    limits: ApiLimits = field(default_factory=ApiLimits)
