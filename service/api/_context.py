"""What the routes work with: one `ApiContext`, built by the composition root (the runtime or a
test) and handed to `create_app`. Optional parts are None when the service runs without them
(no hub: no registry sync; no release service: release routes answer 503 `unavailable`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from service.engine import Engine
from service.hubgateway import HubGateway
from service.releases import MemberView, ReleasePage, ReleaseView
from service.storage import Storage

__all__ = ["ApiContext", "ReleasePort", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


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
